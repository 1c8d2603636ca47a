"""The skdd source files a module depends on: its import closure inside the package, read from the source (ast),
imports inside functions included. `tests/test_dvc_deps.py` checks dvc.yaml's deps against it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def module_file(name: str) -> Path | None:
    path = SRC / Path(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def modules() -> list[str]:
    """Every module of the skdd package, by dotted name."""
    names = []
    for path in sorted((SRC / "skdd").rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        names.append(".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts))
    return names


def imports_of(name: str) -> set[str]:
    """The skdd modules `name` imports anywhere in its source (inside functions too), `from m import sub`
    counting `m.sub` when that is a module."""
    path = module_file(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "skdd"}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            if module.split(".")[0] != "skdd":
                continue
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names if module_file(f"{module}.{a.name}")}
    return {m for m in found if module_file(m) is not None}


def closure(start: str) -> set[str]:
    """Repo-relative paths of every skdd source file `start` imports, directly or not (parent packages too)."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += sorted(imports_of(name))
    return {p.relative_to(ROOT).as_posix() for p in seen}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d.rstrip("/") or path.startswith(d.rstrip("/") + "/") for d in deps)


def compact(files: set[str]) -> list[str]:
    """The files as dvc deps: a folder when every .py file under it is needed, else the files."""
    out: list[str] = []
    folders = sorted({str(Path(f).parent) for f in files}, key=lambda p: (p.count("/"), p))
    whole = [d for d in folders if d != "src/skdd" and
             {p.relative_to(ROOT).as_posix() for p in (ROOT / d).rglob("*.py")} <= files]
    for d in whole:
        if not any(covered(d, out) for _ in [0]):
            out.append(d)
    out += sorted(f for f in files if not covered(f, out))
    return out
