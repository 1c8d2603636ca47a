"""`skdd lineage show|verify`: walk an artifact's ancestry down to its data sources.

Each manifest names its parents by URI and the sha256 of the parent's manifest, so one walk answers both
"where did this come from?" (stage, params hash, code version, inputs) and "did any byte change since?"
(every file re-hashed, every parent manifest compared with the hash its child recorded, the source files of
the ingest stage re-hashed when they are still reachable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from skdd import lineage, storage
from skdd.errors import SkddError


def _check_sources(record: dict) -> tuple[list[str], list[str]]:
    """Ingest's source files: re-hashed when present; absence is a note, not a failure (sources move)."""
    problems, notes = [], []
    for src in record.get("files", []):
        path = Path(src["path"])
        if not path.is_file():
            notes.append(f"{path}: source not reachable from here (recorded sha256 {src['sha256'][:12]}…)")
        elif lineage.sha256_file(path) != src["sha256"]:
            problems.append(f"{path}: source file changed since ingest")
    return problems, notes


def walk(uri: str, expected_manifest_sha: str | None = None, _seen: set | None = None) -> dict[str, Any]:
    """The ancestry tree of `uri` with every problem found on the way (nothing raises for a bad ancestor)."""
    seen = _seen if _seen is not None else set()
    node: dict[str, Any] = {"uri": str(uri), "problems": [], "notes": [], "parents": []}
    root = Path(str(uri))
    manifest_path = root / storage.MANIFEST
    if not manifest_path.is_file():
        node["problems"].append(f"{manifest_path}: missing (artifact absent or incomplete)")
        return node
    if expected_manifest_sha is not None and lineage.sha256_file(manifest_path) != expected_manifest_sha:
        node["problems"].append(f"{manifest_path}: changed since the child artifact recorded it")
    try:
        manifest = lineage.read_manifest(root)
    except SkddError as exc:
        node["problems"].append(str(exc))
        return node
    node.update(kind=manifest["kind"], stage=manifest["stage"], created=manifest.get("created"),
                params_hash=manifest.get("params_hash"), code=manifest.get("code"), files=len(manifest["files"]))
    node["problems"] += list(lineage.file_problems(root, manifest))
    key = str(root.resolve())
    if key in seen:
        node["notes"].append("ancestry shown above")
        return node
    seen.add(key)
    for record in manifest.get("inputs", []):
        if "manifest_sha256" in record:
            node["parents"].append({"name": record["name"], **walk(record["uri"], record["manifest_sha256"], seen)})
        else:   # a data source read by ingest
            problems, notes = _check_sources(record)
            node["parents"].append({"name": record["name"], "uri": record["uri"], "kind": "source",
                                    "source_kind": record.get("kind"), "problems": problems, "notes": notes,
                                    "parents": [], "files": len(record.get("files", []))})
    return node


def problems(node: dict) -> list[str]:
    found = list(node["problems"])
    for parent in node["parents"]:
        found += problems(parent)
    return found


def render(node: dict, indent: str = "") -> list[str]:
    if node.get("kind") == "source":
        head = f"{node['name']}: source {node.get('source_kind')} {node['uri']} ({node['files']} files)"
    else:
        code = node.get("code") or {}
        commit = (code.get("git_commit") or "")[:10]
        head = (f"{node.get('name', 'artifact')}: {node['uri']}  [{node.get('kind', '?')} by {node.get('stage', '?')}, "
                f"params {str(node.get('params_hash', ''))[:10]}, skdd {code.get('skdd', '?')}"
                f"{' @' + commit if commit else ''}, {node.get('created', '?')}]")
    status = "FAIL" if node["problems"] else "ok"
    lines = [f"{indent}{head}  {status}"]
    for msg in node["problems"]:
        lines.append(f"{indent}  ! {msg}")
    for msg in node["notes"]:
        lines.append(f"{indent}  · {msg}")
    for parent in node["parents"]:
        lines += render(parent, indent + "    ")
    return lines


def main(action: str, uri: str, as_json: bool) -> int:
    storage.input_dir(uri)   # a missing or incomplete artifact is a usage error (exit 2), not an audit finding
    tree = walk(uri)
    if as_json:
        print(json.dumps(tree, indent=2))
    else:
        print("\n".join(render(tree)))
    if action == "verify":
        found = problems(tree)
        if found:
            if not as_json:
                print(f"lineage verify: {len(found)} problem(s); first: {found[0]}")
            return 1
        if not as_json:
            print("lineage verify: every file and every ancestor matches its manifest")
    return 0
