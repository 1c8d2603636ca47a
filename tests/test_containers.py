"""The Dockerfiles agree with the project's own install, without a Docker engine.

A small parser reads containers/Dockerfile (CUDA) and containers/Dockerfile.cpu into stages with their ARG/ENV
values expanded; each property is a function returning problems, checked on the real files and, so that every
check is known to be live, on a copy broken in the way the check guards against.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = {"cuda": ROOT / "containers" / "Dockerfile", "cpu": ROOT / "containers" / "Dockerfile.cpu"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# The interpreter constraints.txt was frozen under (pip freeze does not record it); the images must match it.
FROZEN_PYTHON = "3.11"
# Extras that are for developing skdd, not for running it: never in an image.
DEV_EXTRAS = {"test"}
# Pinned with == in a Dockerfile but deliberately not in constraints.txt (pip freeze leaves pip out).
BUILD_TOOLS = {"pip"}
BUILD_TOOL_PACKAGES = re.compile(r"^(gcc|g\+\+|cpp|clang|make|cmake|build-essential|.*-dev|.*-devel|cuda-nvcc.*)$")


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[canonicalize_name(name)] = version
    return pins


# ---- a small Dockerfile parser ----------------------------------------------------------------------------
@dataclass
class Stage:
    base: str
    name: str | None
    vars: dict[str, str] = field(default_factory=dict)  # ARG and ENV values in scope, expanded
    global_args: dict[str, str] = field(default_factory=dict)  # ARGs declared before the first FROM
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, expanded arguments)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _expand(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m[1] or m[2], m[0]), text)


def _assignments(args: str, values: dict[str, str]) -> dict[str, str]:
    """`K=V K2="V 2"` (ENV, ARG with default) or a bare `K` (ARG): values expanded in order."""
    out = {}
    for word in shlex.split(args):
        key, eq, value = word.partition("=")
        out[key] = _expand(value, {**values, **out}) if eq else values.get(key, "")
    return out


def parse_dockerfile(text: str) -> list[Stage]:
    lines, pending = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments (and parser directives) are whole lines, also inside a continuation
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = _expand(args, global_args).split()
            name = words[2] if len(words) > 2 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name, global_args=global_args))
        elif not stages:
            if keyword == "ARG":
                global_args.update(_assignments(args, global_args))
        else:
            stage = stages[-1]
            if keyword == "ARG":  # a bare ARG inherits the global default
                stage.vars.update(_assignments(args, {**global_args, **stage.vars}))
            elif keyword == "ENV":
                stage.vars.update(_assignments(args, stage.vars))
            stage.instructions.append((keyword, _expand(args, stage.vars)))
    return stages


def commands(run: str) -> list[list[str]]:
    """A RUN line's shell commands as word lists, split at `&&`, `||`, `;` outside quotes."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    out: list[list[str]] = [[]]
    for word in lexer:
        if word in ("&&", "||", ";"):
            out.append([])
        else:
            out[-1].append(word)
    return [words for words in out if words]


def pip_installs(stage: Stage) -> list[dict]:
    """Each `pip install` in the stage's RUN lines: options, requirements."""
    found = []
    for run in stage.all("RUN"):
        for words in commands(run):
            if "pip" not in " ".join(words[:4]) or "install" not in words:
                continue
            options: dict[str, list[str]] = {}
            requirements: list[str] = []
            rest = iter(words[words.index("install") + 1:])
            for word in rest:
                if word in ("-c", "--constraint", "-r", "--requirement", "-i", "--index-url",
                            "--extra-index-url", "-f", "--find-links"):
                    options.setdefault(word, []).append(next(rest))
                elif word.startswith("-"):
                    options.setdefault(word, [])
                else:
                    requirements.append(word)
            found.append({"options": options, "requirements": requirements})
    return found


def load(variant: str, text: str | None = None) -> list[Stage]:
    return parse_dockerfile(text if text is not None else DOCKERFILES[variant].read_text())


# ---- the properties ---------------------------------------------------------------------------------------
def problems_install(stages: list[Stage]) -> list[str]:
    """One project install, `pip install -c constraints.txt '.[<the non-dev extras>]'`, non-editable; any other
    pip install brings in exact pins only, without their dependencies, or is pip itself."""
    problems, project_installs = [], 0
    wanted = set(PYPROJECT["project"]["optional-dependencies"]) - DEV_EXTRAS
    for stage in stages:
        for install in pip_installs(stage):
            opts, reqs = install["options"], install["requirements"]
            project = [r for r in reqs if re.fullmatch(r"\.(\[.*\])?", r)]
            if project:
                project_installs += 1
                extras = set(filter(None, re.sub(r"^\.\[?|\]$", "", project[0]).split(",")))
                if opts.get("-c", []) + opts.get("--constraint", []) != ["constraints.txt"]:
                    problems.append(f"project install without -c constraints.txt: {install}")
                if extras != wanted:
                    problems.append(f"project installed with extras {sorted(extras)}, declared {sorted(wanted)}")
                if "-e" in opts or "--editable" in opts:
                    problems.append("editable install in an image")
            elif "-c" not in opts and "--constraint" not in opts:
                only_pip = {canonicalize_name(r.split("==")[0]) for r in reqs} <= BUILD_TOOLS
                exact = all("==" in r for r in reqs)
                if not (exact and (only_pip or "--no-deps" in opts)):
                    problems.append(f"pip install outside the pinned set: {reqs} {sorted(opts)}")
    if project_installs != 1:
        problems.append(f"{project_installs} project installs, expected 1")
    return problems


def problems_pins(stages: list[Stage], variant: str) -> list[str]:
    """Every name==version a Dockerfile installs, and its Python and CUDA versions, agree with the project."""
    problems, pins = [], constraints()
    for stage in stages:
        for install in pip_installs(stage):
            for req in install["requirements"]:
                if "==" not in req:
                    continue
                name, version = canonicalize_name(req.split("==")[0]), Version(req.split("==")[1])
                if name in BUILD_TOOLS:
                    continue
                if name not in pins:
                    problems.append(f"{req}: not in constraints.txt")
                elif version.public != pins[name]:
                    problems.append(f"{req}: constraints.txt pins {pins[name]}")
                elif version.local not in (None, "cpu") or (version.local and variant != "cpu"):
                    problems.append(f"{req}: unexpected local build label")
    python = {s.vars.get("PYTHON_VERSION", s.global_args.get("PYTHON_VERSION")) for s in stages} - {None}
    if len(python) != 1:
        problems.append(f"PYTHON_VERSION is {python or 'unset'}, expected one value")
    else:
        (version,) = python
        if not version.startswith(FROZEN_PYTHON + ".") or version not in SpecifierSet(
                PYPROJECT["project"]["requires-python"]):
            problems.append(f"Python {version}: constraints.txt was frozen under {FROZEN_PYTHON}")
        text = " ".join(s.base + " " + " ".join(a for _, a in s.instructions) for s in stages)
        for used in re.findall(r"\bpython:(\d[\w.]*)-|uv python (?:install|find) \"?([\d.]+)", text):
            if version not in used:
                problems.append(f"a Python other than {version} is used: {used}")
    cuda = ".".join(pins["nvidia-cuda-runtime"].split(".")[:2])  # the CUDA runtime the torch wheel pulls in
    for stage in stages:
        image, _, tag = stage.base.rpartition(":") if ":" in stage.base else (stage.base, "", "")
        if not tag or tag == "latest" or "$" in tag:
            problems.append(f"FROM {stage.base}: base image not pinned to a tag")
        if image.endswith("nvidia/cuda") and not tag.startswith(cuda + "."):
            problems.append(f"FROM {stage.base}: torch {pins['torch']} is built for CUDA {cuda}")
    if variant == "cuda" and not any(s.base.startswith("nvidia/cuda:") for s in stages):
        problems.append("the CUDA image is not based on nvidia/cuda")
    return problems


def problems_user(stages: list[Stage]) -> list[str]:
    users = stages[-1].all("USER")
    if not users:
        return ["the final stage runs as root (no USER)"]
    user = users[-1].split(":")[0]
    if user in ("root", "0") or not user.isdigit():
        return [f"USER {users[-1]}: must be a numeric non-root UID (Kubernetes runAsNonRoot checks it)"]
    return []


def problems_final_stage(stages: list[Stage]) -> list[str]:
    """The final stage copies the venv the project was installed into from the builder, and builds nothing."""
    final, problems = stages[-1], []
    builders = {s.name: s for s in stages[:-1] if any(any(re.fullmatch(r"\.(\[.*\])?", r) for r in i["requirements"])
                                                      for i in pip_installs(s))}
    venvs = {m[1]: name for name, s in builders.items() for run in s.all("RUN")
             for m in re.finditer(r"-m venv (\S+)", run)}
    copied = {tuple(a.split()[1:3]): a.split()[0].removeprefix("--from=") for a in final.all("COPY")
              if a.startswith("--from=")}
    if not any(src == dst and venvs.get(src) == stage for (src, dst), stage in copied.items()):
        problems.append(f"the final stage does not copy the builder's venv {sorted(venvs)} (copies {copied})")
    for name, stage in builders.items():  # an interpreter installed in the builder (uv) must come along too
        interpreter = stage.vars.get("UV_PYTHON_INSTALL_DIR")
        if interpreter and copied.get((interpreter, interpreter)) != name:
            problems.append(f"the venv's interpreter {interpreter} is not copied from {name}")
    if "devel" in final.base:
        problems.append(f"FROM {final.base}: a devel image ships compilers")
    for run in final.all("RUN"):
        if re.search(r"\bpip\b.*\binstall\b", run):
            problems.append(f"the final stage installs Python packages: {run}")
        for words in commands(run):
            if {"install", "add"} & set(words[1:3]) and words[0] in ("apt-get", "apt", "apk", "yum", "dnf"):
                tools = [w for w in words if BUILD_TOOL_PACKAGES.match(w)]
                if tools:
                    problems.append(f"the final stage installs build tools: {tools}")
    venv_bins = [src + "/bin" for (src, _), _ in copied.items() if src in venvs]
    path = final.vars.get("PATH", "")
    if not venv_bins or not path.startswith(venv_bins[0] + ":"):
        problems.append(f"PATH={path}: `python3` must be the venv's (KFP runs `python3 -m kfp.dsl...`)")
    return problems


def problems_image_ref(stages: list[Stage], variant: str) -> list[str]:
    from skdd import image

    version = PYPROJECT["project"]["version"]
    final, problems = stages[-1], []
    expected = f"{image.REPOSITORY}:{version}{'' if variant == 'cuda' else '-cpu'}"
    env = [w for args in final.all("ENV") for w in shlex.split(args) if w.startswith("SKDD_IMAGE=")]
    if env != [f"SKDD_IMAGE={expected}"]:
        problems.append(f"ENV {env}: the image must set SKDD_IMAGE={expected}")
    labels = " ".join(final.all("LABEL"))
    if f'org.opencontainers.image.version="{version}"' not in labels:
        problems.append(f"OCI label org.opencontainers.image.version is not {version}")
    return problems


# ---- tests ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_dockerfiles_hold_every_property(variant):
    stages = load(variant)
    assert len(stages) >= 2, "multi-stage build expected"
    assert problems_install(stages) == []
    assert problems_pins(stages, variant) == []
    assert problems_user(stages) == []
    assert problems_final_stage(stages) == []
    assert problems_image_ref(stages, variant) == []
    final = stages[-1]
    assert json.loads(final.all("ENTRYPOINT")[-1]) == []
    assert json.loads(final.all("CMD")[-1])[0] == "skdd"
    assert "kfp" in " ".join(PYPROJECT["project"]["optional-dependencies"]["pipeline"])


def test_build_tools_pinned_alike():
    pins = {variant: sorted(r for stage in load(variant) for i in pip_installs(stage) for r in i["requirements"]
                            if canonicalize_name(r.split("==")[0]) in BUILD_TOOLS) for variant in DOCKERFILES}
    assert pins["cuda"] == pins["cpu"] and all("==" in r for r in pins["cuda"]), pins


# (variant, text replaced, replacement, the check that must object)
BREAKAGES = [
    ("cuda", "-c constraints.txt '.[pipeline]'", "'.[pipeline]'", problems_install),
    ("cpu", "-c constraints.txt '.[pipeline]'", "-c constraints.txt '.[pipeline,test]'", problems_install),
    ("cpu", "'.[pipeline]'", "-e '.[pipeline]'", problems_install),
    ("cpu", "--no-deps --index-url", "--index-url", problems_install),
    ("cpu", "ARG TORCH_VERSION=2.14.1", "ARG TORCH_VERSION=2.14.0", problems_pins),
    ("cpu", "ARG PYTHON_VERSION=3.11.7", "ARG PYTHON_VERSION=3.12.3", problems_pins),
    ("cuda", "ARG PYTHON_VERSION=3.11.7", "ARG PYTHON_VERSION=3.10.14", problems_pins),
    ("cuda", "13.0.2-base-ubuntu24.04", "12.8.1-base-ubuntu24.04", problems_pins),
    ("cuda", "13.0.2-base-ubuntu24.04", "latest", problems_pins),
    ("cuda", "USER 10001:10001", "USER root", problems_user),
    ("cpu", "USER 10001:10001", "", problems_user),
    ("cuda", "COPY --from=builder /opt/venv /opt/venv", "", problems_final_stage),
    ("cpu", "COPY --from=builder /opt/venv /opt/venv",
     "COPY --from=builder /opt/venv /opt/venv\nRUN apt-get install -y gcc", problems_final_stage),
    ("cpu", "ENV PATH=/opt/venv/bin:${PATH}", "ENV PATH=${PATH}:/opt/venv/bin", problems_final_stage),
    ("cuda", "-base-ubuntu24.04 AS runtime", "-devel-ubuntu24.04 AS runtime", problems_final_stage),
    ("cuda", "COPY --from=builder /opt/python /opt/python", "", problems_final_stage),
    ("cpu", "ghcr.io/skdd/skdd:0.1.0-cpu", "ghcr.io/skdd/skdd:0.1.0", problems_image_ref),
    ("cuda", "SKDD_IMAGE=${SKDD_IMAGE}", "SKDD_VERSION=0.1.0", problems_image_ref),
    ("cuda", 'image.version="0.1.0"', 'image.version="0.0.9"', problems_image_ref),
]


@pytest.mark.parametrize("variant,old,new,check", BREAKAGES)
def test_each_check_rejects_its_breakage(variant, old, new, check):
    text = DOCKERFILES[variant].read_text()
    if old == "-base-ubuntu24.04 AS runtime":  # the final FROM uses the ARG; break it literally
        text = text.replace("FROM ${CUDA_BASE} AS runtime", "FROM nvidia/cuda:13.0.2-devel-ubuntu24.04 AS runtime")
    else:
        assert old in text, f"breakage {old!r} no longer applies to {DOCKERFILES[variant].name}"
        text = text.replace(old, new)
    args = (load(variant, text), variant) if check in (problems_pins, problems_image_ref) else (load(variant, text),)
    assert check(*args) != []


# ---- .dockerignore: Docker's rules (last matching pattern wins; a path is also matched by its parents) --------
def _pattern(pattern: str) -> re.Pattern:
    out, i = "", 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_excludes(path: str, text: str) -> bool:
    rules = [(line.startswith("!"), _pattern(line.lstrip("!"))) for line in map(str.strip, text.splitlines())
             if line and not line.startswith("#")]
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negated, rx in rules:
        if any(rx.fullmatch(p) for p in prefixes):
            excluded = not negated
    return excluded


IGNORED = [".venv/bin/python", "artifacts/report/report.md", ".git/HEAD", ".dvc/cache/files/md5/ab/cdef",
           ".dvc/tmp/lock", ".dvc/config.local", ".pytest_cache/v/cache/lastfailed", "tests/test_s3.py",
           "tests/__pycache__/helpers.cpython-311.pyc", "src/skdd/__pycache__/cli.cpython-311.pyc",
           "src/skdd.egg-info/PKG-INFO", "datasets/SOURCES.md", "build/lib/skdd/cli.py"]


def test_dockerignore_keeps_out_local_state_and_lets_in_what_the_build_copies():
    text = (ROOT / ".dockerignore").read_text()
    leaked = [p for p in IGNORED if not dockerignore_excludes(p, text)]
    assert leaked == []
    copied = {word for variant in DOCKERFILES for stage in load(variant) for args in stage.all("COPY")
              if not args.startswith("--from=") for word in args.split()[:-1]}
    assert copied >= {"constraints.txt", "pyproject.toml", "src"}
    missing = [p for p in sorted(copied) + ["src/skdd/cli.py"] if dockerignore_excludes(p, text)]
    assert missing == []
    # The matcher itself is live: without the file everything would reach the build.
    assert not dockerignore_excludes(".venv/bin/python", "# nothing\n")
    assert dockerignore_excludes("src/skdd/cli.py", text + "\nsrc\n")


def test_default_image_tag_is_the_package_version(monkeypatch):
    import skdd
    from skdd import image

    monkeypatch.delenv("SKDD_IMAGE", raising=False)
    version = PYPROJECT["project"]["version"]
    assert skdd.__version__ == version
    assert image.default_image() == f"ghcr.io/skdd/skdd:{version}"
    assert image.default_image("cpu") == f"ghcr.io/skdd/skdd:{version}-cpu"
    monkeypatch.setenv("SKDD_IMAGE", "registry.example.com/skdd:dev")
    assert image.default_image("cpu") == "registry.example.com/skdd:dev"
