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
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

from skdd import lineage, storage
from skdd.errors import SkddError
from skdd.lineage import content_key, existing_artifact


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


def output_uri(artifact_root: str, stage: str, key: str) -> str:
    root = str(artifact_root).strip().rstrip("/")
    if not root:
        raise SkddError("artifact_root: give a folder or an s3://bucket/prefix for the skdd artifacts")
    return f"{root}/{stage}/{key}"


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
    from skdd.config import as_dict, load_stage_params
    from skdd.stages.registry import STAGES, run_stage

    if s3_endpoint_url:
        os.environ["SKDD_S3_ENDPOINT_URL"] = s3_endpoint_url
    overrides = overrides_from(options)
    inputs = {name: art for name, art in (inputs or {}).items() if art is not None}   # optional ones unset
    input_uris = {name: artifact_uri(art, name) for name, art in inputs.items()}
    input_shas = {name: str((art.metadata or {}).get("manifest_sha256", "")) for name, art in inputs.items()}
    with tempfile.TemporaryDirectory(prefix="skdd-params-") as tmp:
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(params_yaml)
        # validated before anything runs
        params = load_stage_params(STAGES[stage].params_class(), stage, params_file, overrides)
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
    """The row label of an evaluation, as dvc.yaml names them: the distill loss mode."""
    if not loss:
        import yaml

        try:
            preset = yaml.safe_load(params_yaml) or {}
        except yaml.YAMLError:
            raise SkddError("params_yaml: not valid YAML") from None
        section = preset.get("distill") if isinstance(preset, dict) else None
        loss = (section or {}).get("loss") or "skd"
    return str(loss)


def source_fingerprint(params_yaml: str, options: Mapping[str, Any] | None = None) -> str:
    """ingest's cache key part for the data: `skdd.data.fingerprint` of the source, resolved exactly as ingest
    resolves it (preset, overrides, environment)."""
    from skdd.config import load_stage_params
    from skdd.data.fingerprint import source_fingerprint as fingerprint
    from skdd.stages import ingest

    with tempfile.TemporaryDirectory(prefix="skdd-params-") as tmp:
        params_file = Path(tmp) / "params.yaml"
        params_file.write_text(params_yaml)
        params = load_stage_params(ingest.IngestParams, "ingest", params_file, overrides_from(options))
    params = ingest.effective_params(params)
    return fingerprint(params.source, params.name, str(params.location))
