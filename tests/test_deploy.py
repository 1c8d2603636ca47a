"""The example manifests in deploy/ are valid Kubernetes objects, hold no secrets, and agree with each other and
with what skdd reads. Validation is offline: kubernetes-validate bundles the Kubernetes JSON schemas, and the
network is blocked while it runs to prove that.
"""

from __future__ import annotations

import base64
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))
# The Secret the pipeline's tasks take their credentials from (kfp.kubernetes.use_secret_as_env), by default;
# its keys become the tasks' environment variables of the same names, which boto3 reads.
SECRET, SECRET_KEYS = "skdd-s3-credentials", {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
PLACEHOLDER = "REPLACE_ME"
# An old still-common cluster version and the newest the package knows; strict: unknown fields are errors.
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# The fields KFP's Go structs read (backend/src/v2/config/s3.go); sigs.k8s.io/yaml ignores any other key
# silently, so a typo there would fall back to defaults without an error. Matched case-insensitively, as Go does.
S3_DEFAULT_FIELDS = {"endpoint", "credentials", "region", "disablessl", "forcepathstyle", "maxretries"}
S3_CREDENTIAL_FIELDS = {"fromenv", "secretref"}
S3_SECRET_REF_FIELDS = {"secretname", "accesskeykey", "secretkeykey"}


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access during validation")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def validation_problems(path: Path) -> list[str]:
    """Every document against the Kubernetes schemas; an unknown kind is a problem, not a skip."""
    problems = []
    for doc in documents(path):
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{path.name} {doc.get('kind')} (k8s {version}): "
                                f"{'.'.join(map(str, e.path))}: {e.message}")
            except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
                problems.append(f"{path.name}: {e.message}")
    return problems


def objects() -> dict[tuple[str, str], dict]:
    found = {}
    for path in MANIFESTS:
        for doc in documents(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} defined twice"
            found[key] = doc
    return found


def test_manifests_exist():
    assert {p.name for p in MANIFESTS} >= {"s3-credentials-secret.yaml", "kfp-launcher-configmap.yaml"}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path, offline):
    assert documents(path), f"{path.name} holds no objects"
    assert validation_problems(path) == []


@pytest.mark.parametrize("broken", [
    # a wrong type, a misspelt field (strict), an unknown kind, a missing required field
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: [1, 2]}\n",
    "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\nstringdata: {a: b}\n",
    "apiVersion: v1\nkind: ConfigMapp\nmetadata: {name: x}\n",
    "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{image: busybox}]}\n",
], ids=["type", "unknown-field", "unknown-kind", "missing-required"])
def test_validator_rejects_a_broken_manifest(broken, tmp_path, offline):
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    assert validation_problems(path) != []


def test_secret_holds_only_placeholders():
    secret = objects()[("Secret", SECRET)]
    values = dict(secret.get("stringData", {}))
    values.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
    assert set(values) == SECRET_KEYS
    assert set(values.values()) == {PLACEHOLDER}
    # Nothing anywhere in deploy/ that looks like a real AWS key id or secret key.
    for path in DEPLOY.iterdir():
        text = path.read_text()
        assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text), path.name
        assert not re.search(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])", text), path.name


def test_secret_names_are_the_ones_the_pipeline_uses(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # `pipelines` is a top-level folder of the repository
    from pipelines import skdd_pipeline

    assert (skdd_pipeline.DEFAULT_SECRET, set(skdd_pipeline.SECRET_KEYS)) == (SECRET, SECRET_KEYS)
    assert ("Secret", SECRET) in objects()


def _lower_keys(value):
    return {k.lower(): _lower_keys(v) for k, v in value.items()} if isinstance(value, dict) else value


def test_kfp_launcher_points_at_the_s3_store_with_the_secret():
    found = objects()
    launcher = found[("ConfigMap", "kfp-launcher")]["data"]
    root = urlsplit(launcher["defaultPipelineRoot"])
    assert root.scheme == "s3" and root.netloc, launcher["defaultPipelineRoot"]

    providers = _lower_keys(yaml.safe_load(launcher["providers"]))
    assert set(providers) == {"s3"}
    default = providers["s3"]["default"]
    assert set(default) <= S3_DEFAULT_FIELDS, set(default) - S3_DEFAULT_FIELDS
    assert set(default["credentials"]) <= S3_CREDENTIAL_FIELDS
    assert default["credentials"].get("fromenv") is False
    ref = default["credentials"]["secretref"]
    assert set(ref) == S3_SECRET_REF_FIELDS
    assert ref["secretname"] == SECRET
    assert {ref["accesskeykey"], ref["secretkeykey"]} == SECRET_KEYS
    assert default.get("forcepathstyle") is True, "S3-compatible stores need path-style addressing"

    # host[:port], as KFP's docs write it; KFP adds the scheme from disableSSL (older launchers take no scheme).
    assert re.fullmatch(r"[A-Za-z0-9.-]+(:\d+)?", default["endpoint"]), default["endpoint"]
    assert isinstance(default.get("disablessl", False), bool)


def test_one_namespace_for_all():
    # The launcher resolves secretRef in its own namespace, where the pipeline's steps read the Secret too.
    namespaces = {doc["metadata"].get("namespace") for doc in objects().values()}
    assert len(namespaces) == 1, namespaces
