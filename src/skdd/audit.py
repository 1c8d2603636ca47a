"""`skdd lineage show|verify`: walk an artifact's ancestry down to its data sources.

Each manifest names its parents by URI and the sha256 of the parent's manifest (and carries a digest of its own
content, so a root's manifest is checked too), so one walk answers both
"where did this come from?" (stage, params hash, code version, inputs) and "did any byte change since?"
(every file re-hashed, every parent manifest compared with the hash its child recorded, the source files of
the ingest stage re-hashed when they are still reachable).

Artifacts and sources may live in `s3://`: an S3 artifact is downloaded afresh (never the cache, which
could hide a same-size change in the bucket) and an S3 source object is re-hashed as it is streamed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from skdd import lineage, storage
from skdd.errors import SkddError


def _source_sha256(path: str) -> str | None:
    """Current sha256 of a source file (local or s3://), None when it cannot be reached from here."""
    if path.startswith("s3://"):
        from skdd.data.s3_sources import object_sha256

        try:
            return object_sha256(path)
        except SkddError:
            return None
    return lineage.sha256_file(Path(path)) if Path(path).is_file() else None


def _check_sources(record: dict) -> tuple[list[str], list[str]]:
    """Ingest's source files: re-hashed when present; absence is a note, not a failure (sources move)."""
    problems, notes = [], []
    for src in record.get("files", []):
        current = _source_sha256(src["path"])
        if current is None:
            notes.append(f"{src['path']}: source not reachable from here (recorded sha256 {src['sha256'][:12]}…)")
        elif current != src["sha256"]:
            problems.append(f"{src['path']}: source file changed since ingest")
    return problems, notes


def _artifact_root(uri: str) -> tuple[Path | None, str | None]:
    """A local folder holding the artifact's current bytes, or the reason there is none."""
    if uri.startswith("s3://"):
        from skdd import s3

        try:
            return s3.download(uri, fresh=True), None
        except SkddError as exc:
            return None, str(exc)
    root = Path(uri)
    if not (root / storage.MANIFEST).is_file():
        return None, f"{root / storage.MANIFEST}: missing (artifact absent or incomplete)"
    return root, None


def walk(uri: str, expected_manifest_sha: str | None = None, _seen: set | None = None,
         root: Path | None = None, signing_key: bytes | None = None) -> dict[str, Any]:
    """The ancestry tree of `uri` with every problem found on the way (nothing raises for a bad ancestor).

    `root`: the artifact's bytes already fetched by the caller (an S3 download is not repeated).
    `signing_key`: also require each manifest's signature under this key (`lineage.signature_problem`)."""
    seen = _seen if _seen is not None else set()
    node: dict[str, Any] = {"uri": str(uri), "problems": [], "notes": [], "parents": []}
    missing = None
    if root is None:
        root, missing = _artifact_root(str(uri))
    if root is None:
        node["problems"].append(missing)
        return node
    manifest_path = root / storage.MANIFEST
    if expected_manifest_sha is not None and lineage.sha256_file(manifest_path) != expected_manifest_sha:
        node["problems"].append(f"{uri}/{storage.MANIFEST}: changed since the child artifact recorded it")
    try:
        manifest = lineage.read_manifest(root)
    except SkddError as exc:
        node["problems"].append(str(exc))
        return node
    node.update(kind=manifest["kind"], stage=manifest["stage"], created=manifest.get("created"),
                params_hash=manifest.get("params_hash"), code=manifest.get("code"), files=len(manifest["files"]),
                signed=lineage.SIGNATURE_FIELD in manifest)
    if signing_key is not None:
        unsigned = lineage.signature_problem(manifest, signing_key)
        if unsigned is not None:
            node["problems"].append(f"{uri}/{storage.MANIFEST}: {unsigned}")
    # problems name the artifact's URI, not the audit's local download folder
    node["problems"] += [msg.replace(str(root), str(uri).rstrip("/")) for msg in lineage.file_problems(root, manifest)]
    key = str(uri) if str(uri).startswith("s3://") else str(root.resolve())
    if key in seen:
        node["notes"].append("ancestry shown above")
        return node
    seen.add(key)
    for record in manifest.get("inputs", []):
        if "manifest_sha256" in record:
            node["parents"].append({"name": record["name"],
                                    **walk(record["uri"], record["manifest_sha256"], seen, signing_key=signing_key)})
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
                f"{' @' + commit if commit else ''}, {node.get('created', '?')}{', signed' if node.get('signed') else ''}]")
    status = "FAIL" if node["problems"] else "ok"
    lines = [f"{indent}{head}  {status}"]
    for msg in node["problems"]:
        lines.append(f"{indent}  ! {msg}")
    for msg in node["notes"]:
        lines.append(f"{indent}  · {msg}")
    for parent in node["parents"]:
        lines += render(parent, indent + "    ")
    return lines


def main(action: str, uri: str, as_json: bool, key: bool = False) -> int:
    # a missing or incomplete artifact, or --key without a key, is a usage error (exit 2), not an audit finding
    signing_key = lineage.signing_key() if key else None
    if key and signing_key is None:
        raise SkddError(f"--key: set {lineage.SIGNING_KEY_ENV} to the signing key (it is never read from the "
                        "command line)")
    if uri.startswith("s3://"):
        root, missing = _artifact_root(uri)   # the fresh download the walk reads, fetched once
        if root is None:
            raise SkddError(missing)
    else:
        root = storage.input_dir(uri)
    tree = walk(uri, root=root, signing_key=signing_key)
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
            print("lineage verify: every file and every ancestor matches its manifest"
                  + (", and every manifest is signed with your key" if key else ""))
    return 0
