"""What a Kubeflow component does inside its container: one call that runs a skdd stage for KFP.

The components in `components/` are thin (KFP ships each function's source text, so they only import this
module and call it); everything they share lives here, inside the package the container image installs:

  * params: the pipeline's `params_yaml` text is the params file (written to a temp file), and the explicit
    pipeline parameters become `--set` overrides; an empty string or empty list means "as the preset says";
  * where the artifact goes: `{artifact_root}/{stage}/{key}`, `key` a content key (sha256 of the stage, the
    skdd version, the validated params and the input artifacts' manifest sha256s, plus the source fingerprint
    for ingest). Identical inputs map to the same URI, so a complete artifact already there is reused instead
    of recomputed; every manifest names its parents by these URIs (s3:// on a cluster), which is what
    `skdd lineage verify` walks later;
  * what KFP sees: each output artifact's file is a copy of a file of the skdd artifact (the manifest, or
    metrics.json / report.md) and its metadata holds the manifest's key facts (uri, kind, manifest_sha256,
    params_hash, counts, metrics). Downstream components read `metadata["uri"]`.

The run id for metrics (`SKDD_RUN_ID`) and the image ref (`SKDD_IMAGE`) arrive as environment variables set
by the pipeline, never as component inputs, so they do not defeat KFP's cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import skdd
from skdd import lineage, storage
from skdd.errors import SkddError, one_line

KEY_CHARS = 20


def _plain(value: Any) -> Any:
    """KFP carries numbers as JSON doubles (a list default [10] arrives as [10.0]): whole floats back to ints.

    Harmless for float params (the loader accepts ints for floats), necessary for int params."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def overrides_from(options: Mapping[str, Any] | None) -> list[str]:
    """`key=value` overrides for the options that are set; values as JSON (valid YAML, strings stay strings)."""
    result = []
    for key, value in (options or {}).items():
        if value is None or value == "" or value == []:
            continue
        result.append(f"{key}={json.dumps(_plain(value))}")
    return result


def artifact_uri(artifact: Any, name: str) -> str:
    """The skdd artifact behind an upstream KFP artifact (its `uri` metadata)."""
    uri = (getattr(artifact, "metadata", None) or {}).get("uri")
    if not uri:
        raise SkddError(f"input {name}: the KFP artifact carries no skdd artifact URI (metadata 'uri'); "
                        "it must come from an skdd component")
    return str(uri)


def content_key(stage: str, params: dict[str, Any], inputs: Mapping[str, str], extra: str = "") -> str:
    blob = json.dumps({"stage": stage, "skdd": skdd.__version__, "params": params, "inputs": dict(inputs),
                       "extra": extra}, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:KEY_CHARS]


def output_uri(artifact_root: str, stage: str, key: str) -> str:
    root = str(artifact_root).strip().rstrip("/")
    if not root:
        raise SkddError("artifact_root: give a folder or an s3://bucket/prefix for the skdd artifacts")
    return f"{root}/{stage}/{key}"


def _remote_manifest_exists(uri: str) -> bool:
    from skdd import s3

    s3uri = s3.parse(uri)
    cli = s3.client(s3uri)
    try:
        cli.head_object(Bucket=s3uri.bucket, Key=s3uri.key(storage.MANIFEST))
        return True
    except Exception as exc:  # noqa: BLE001 - botocore errors; a 404 means "not there yet"
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound"):
            return False
        raise s3._error(s3uri, "lookup", exc) from None


def existing_artifact(uri: str) -> dict[str, Any] | None:
    """The manifest of a complete artifact already at `uri` (re-verified), or None when there is none."""
    if uri.startswith("s3://"):
        if not _remote_manifest_exists(uri):
            return None
        path = storage.input_dir(uri)
    else:
        path = Path(uri)
        if not (path / storage.MANIFEST).is_file():
            return None
    try:
        return lineage.verify_artifact(path)
    except SkddError as exc:
        raise SkddError(f"{uri}: an artifact exists at this content key but fails verification ({exc}); "
                        "delete it to recompute") from None


def _facts(uri: str, key: str, manifest: dict[str, Any], root: Path) -> dict[str, Any]:
    """The manifest's key facts, as KFP artifact metadata (flat where the UI shows scalars)."""
    facts: dict[str, Any] = {
        "uri": uri, "kind": manifest["kind"], "stage": manifest["stage"],
        "manifest_sha256": lineage.sha256_file(root / storage.MANIFEST),
        "params_hash": manifest.get("params_hash"), "content_key": key,
        "skdd_version": (manifest.get("code") or {}).get("skdd"), "files": len(manifest.get("files", [])),
    }
    dataset = manifest.get("dataset")
    if isinstance(dataset, dict):
        facts.update(dataset_name=dataset.get("name"), num_classes=dataset.get("num_classes"),
                     shape=dataset.get("shape"))
        for split, count in (dataset.get("counts") or {}).items():
            facts[f"{split}_images"] = count
        if dataset.get("ipc") is not None:
            facts["ipc"] = dataset["ipc"]
    for name, value in (manifest.get("metrics") or {}).items():
        if isinstance(value, (int, float, str, bool)):
            facts.setdefault(name, value)
    if manifest["kind"] == "evaluation":
        metrics = json.loads((root / "metrics.json").read_text())
        for name in ("label", "dataset", "ipc", "protocol", "trials", "epochs", "train_images", "test_images"):
            facts[name] = metrics.get(name)
        for arch, result in metrics.get("architectures", {}).items():
            facts[f"accuracy_{arch}_mean"] = result.get("mean")
            facts[f"accuracy_{arch}_std"] = result.get("std")
    return {k: v for k, v in facts.items() if v is not None}


def _publish(artifact: Any, source: Path, facts: dict[str, Any]) -> None:
    target = Path(artifact.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    artifact.metadata.update(facts)


@contextlib.contextmanager
def reported(stage: str):
    """A SkddError ends the component as the CLI ends: one line on stderr, exit code 2 (no traceback)."""
    try:
        yield
    except SkddError as exc:
        print(f"skdd {stage}: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def run_step(stage: str, outputs: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Run (or reuse) one stage for a KFP component; `outputs` maps a file of the artifact to a KFP output."""
    with reported(stage):
        return _run_step(stage, outputs, **kwargs)


def fingerprint_step(params_yaml: str, options: Mapping[str, Any] | None = None, s3_endpoint_url: str = "") -> str:
    """The fingerprint component's body: `source_fingerprint`, with the same one-line errors."""
    with reported("fingerprint"):
        if s3_endpoint_url:
            os.environ["SKDD_S3_ENDPOINT_URL"] = s3_endpoint_url
        fingerprint = source_fingerprint(params_yaml, options)
    print(f"source fingerprint: {fingerprint}", flush=True)
    return fingerprint


def _run_step(stage: str, outputs: Mapping[str, Any], *, params_yaml: str, artifact_root: str,
              inputs: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
              key_extra: str = "", s3_endpoint_url: str = "") -> dict[str, Any]:
    from skdd.cli import run_stage, stage_entry
    from skdd.config import as_dict, load_stage_params

    if s3_endpoint_url:
        os.environ["SKDD_S3_ENDPOINT_URL"] = s3_endpoint_url
    overrides = overrides_from(options)
    input_uris = {name: artifact_uri(art, name) for name, art in (inputs or {}).items()}
    input_shas = {name: str((art.metadata or {}).get("manifest_sha256", "")) for name, art in (inputs or {}).items()}
    with tempfile.TemporaryDirectory(prefix="skdd-params-") as tmp:
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(params_yaml)
        params_cls, _, _ = stage_entry(stage)
        params = load_stage_params(params_cls, stage, params_file, overrides)   # validated before anything runs
        key = content_key(stage, as_dict(params), input_shas, key_extra)
        uri = output_uri(artifact_root, stage, key)
        manifest = existing_artifact(uri)
        if manifest is not None:
            print(f"skdd {stage}: reusing {uri} (same params and inputs)", flush=True)
        else:
            manifest = run_stage(stage, output=uri, inputs=input_uris, params_file=str(params_file),
                                 overrides=overrides)
    root = storage.input_dir(uri)
    facts = _facts(uri, key, manifest, root)
    for filename, artifact in outputs.items():
        _publish(artifact, root / filename, facts)
    print(json.dumps({"stage": stage, "uri": uri, "manifest_sha256": facts["manifest_sha256"]}), flush=True)
    return facts


def evaluation_label(loss: str, params_yaml: str) -> str:
    """The row label of an evaluation, as dvc.yaml names them: the loss mode, `gan-only` for `none`."""
    if not loss:
        import yaml

        try:
            preset = yaml.safe_load(params_yaml) or {}
        except yaml.YAMLError:
            raise SkddError("params_yaml: not valid YAML") from None
        section = preset.get("distill") if isinstance(preset, dict) else None
        loss = (section or {}).get("loss") or "skd"
    return "gan-only" if loss == "none" else str(loss)


# --------------------------------------------------------------------------- ingest's cache key
def _hash_tree(path: Path, digest: "hashlib._Hash") -> int:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        rel = f.name if f == path else f.relative_to(path).as_posix()
        digest.update(f"{rel}\0{f.stat().st_size}\0{lineage.sha256_file(f)}\n".encode())
    return len(files)


def _hash_s3(location: str, digest: "hashlib._Hash") -> int:
    """Key, size and ETag of every object under the prefix (or the one object): content identity without a download."""
    from skdd import s3

    s3uri = s3.parse(location)
    try:
        objects, _ = s3.list_source(s3.client(s3uri), s3uri)
    except Exception as exc:  # noqa: BLE001 - botocore errors become one line
        raise s3._error(s3uri, "listing", exc) from None
    for key, (size, etag) in sorted(objects.items()):
        digest.update(f"{key}\0{size}\0{etag}\n".encode())
    return len(objects)


def _torchvision_resources(name: str) -> list:
    from torchvision import datasets

    if name == "cifar10":
        return [[datasets.CIFAR10.url, datasets.CIFAR10.filename, datasets.CIFAR10.tgz_md5]]
    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}.get(name)
    if cls is None:
        raise SkddError(f"torchvision source: no dataset named {name!r}")
    return [[cls.mirrors[0] + filename, filename, md5] for filename, md5 in cls.resources]


def source_fingerprint(params_yaml: str, options: Mapping[str, Any] | None = None) -> str:
    """A hash of the dataset source's *content*, so ingest's cache key changes whenever the data does.

    Local folder or file: every file's path, size and sha256. s3:// prefix: every object's key, size and ETag.
    torchvision: the fixed download URLs and md5 sums (the download is verified against them).
    Source and location are resolved exactly as ingest resolves them (preset, overrides, environment).
    """
    from skdd.config import load_stage_params
    from skdd.stages import ingest

    with tempfile.TemporaryDirectory(prefix="skdd-params-") as tmp:
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(params_yaml)
        params = load_stage_params(ingest.IngestParams, "ingest", params_file, overrides_from(options))
    params = ingest.effective_params(params)
    digest = hashlib.sha256(json.dumps({"source": params.source, "name": params.name}).encode())
    if params.source == "torchvision":
        digest.update(json.dumps(_torchvision_resources(params.name)).encode())
        return f"sha256:{digest.hexdigest()}"
    location = str(params.location)
    try:
        if location.startswith("s3://"):
            count = _hash_s3(location, digest)
        else:
            path = Path(location).expanduser()
            if not path.exists():
                raise SkddError(f"{params.source} source not found: {path}")
            count = _hash_tree(path, digest)
    except OSError as exc:
        raise SkddError(f"{location}: cannot read the dataset source ({one_line(exc)})") from None
    if not count:
        raise SkddError(f"{location}: the dataset source holds no files")
    return f"sha256:{digest.hexdigest()}"
