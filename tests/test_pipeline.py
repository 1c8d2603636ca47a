"""The Kubeflow pipeline: compiled YAML (committed, reloadable, GPU / secret wiring, no credentials), `skdd
pipeline submit` against a loopback stand-in of the KFP API, and the component step helper (content keys,
reuse, the source fingerprint)."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

pytest.importorskip("kfp.kubernetes")

from skdd import kfp_steps  # noqa: E402
from skdd.cli import main  # noqa: E402
from skdd.errors import SkddError  # noqa: E402
from skdd.image import REPOSITORY  # noqa: E402

import skdd  # noqa: E402
from helpers import tiny_npz  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "pipelines" / "skdd_pipeline.yaml"
DEFAULT_IMAGE = f"{REPOSITORY}:{skdd.__version__}"
FAKE_KEY_ID = "AKIAFAKEKEYID7Q2X9ZTEST"
FAKE_SECRET = "fake/Secret+Value/that-must-never-leak-0123456789"
SECRET_NAME = "skdd-s3-credentials"
STAGE_EXECUTORS = ("exec-fingerprint-source", "exec-ingest", "exec-teacher", "exec-pretrain", "exec-pool",
                   "exec-distill",
                   "exec-sample", "exec-refine", "exec-evaluate", "exec-report")
GPU_EXECUTORS = {"exec-distill", "exec-refine"}


@pytest.fixture
def fake_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.delenv("SKDD_IMAGE", raising=False)


def compile_to(path: Path, *flags: str, capsys=None) -> dict:
    code = main(["pipeline", "compile", "--output", str(path), *flags])
    assert code == 0
    if capsys is not None:
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return {}


def load_docs(path: Path) -> tuple[dict, dict]:
    """The two documents with kfp's own loader: pipeline spec and Kubernetes platform spec, as dicts."""
    from google.protobuf import json_format
    from kfp import components

    loaded = components.load_component_from_file(str(path))
    spec = json_format.MessageToDict(loaded.pipeline_spec)
    platform = json_format.MessageToDict(loaded.platform_spec)
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module")
def committed():
    if not COMMITTED.is_file():
        pytest.fail("pipelines/skdd_pipeline.yaml is missing: run `skdd pipeline compile --output "
                    "pipelines/skdd_pipeline.yaml`")
    return load_docs(COMMITTED)


# ---------------------------------------------------------------------------------------------- compile
def test_committed_yaml_is_a_fresh_compile_and_holds_no_credentials(tmp_path, fake_credentials, capsys):
    fresh = tmp_path / "fresh.yaml"
    summary = compile_to(fresh, capsys=capsys)
    assert summary["image"] == DEFAULT_IMAGE and summary["gpu_stages"] == ["distill", "refine"]
    text = fresh.read_text()
    assert FAKE_KEY_ID not in text and FAKE_SECRET not in text
    assert COMMITTED.read_text() == text, (
        "pipelines/skdd_pipeline.yaml differs from a fresh compile (pipeline, components, params.yaml or kfp "
        "changed): regenerate it with `skdd pipeline compile --output pipelines/skdd_pipeline.yaml`")
    compile_to(tmp_path / "again.yaml")
    assert (tmp_path / "again.yaml").read_bytes() == fresh.read_bytes(), "compilation is not deterministic"


def test_distill_and_refine_request_a_gpu_on_gpu_nodes(committed):
    spec, k8s = committed
    executors = spec["deploymentSpec"]["executors"]
    for name in GPU_EXECUTORS:
        accelerator = executors[name]["container"]["resources"]["accelerator"]
        assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "1"
        assert k8s[name]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
        assert k8s[name]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    for name in set(STAGE_EXECUTORS) - GPU_EXECUTORS:
        assert "accelerator" not in executors[name]["container"].get("resources", {}), name
    for name in set(STAGE_EXECUTORS) - GPU_EXECUTORS:
        assert "nodeSelector" not in k8s[name] and "tolerations" not in k8s[name], name


def test_every_task_gets_s3_credentials_from_the_secret_and_the_run_id(committed):
    spec, k8s = committed
    assert set(spec["deploymentSpec"]["executors"]) == set(STAGE_EXECUTORS) == set(k8s)
    for name in STAGE_EXECUTORS:
        (secret,) = k8s[name]["secretAsEnv"]
        assert secret["secretName"] == SECRET_NAME
        assert {(m["secretKey"], m["envVar"]) for m in secret["keyToEnv"]} == {
            ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"), ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")}
        assert k8s[name]["fieldPathAsEnv"] == [{"name": "SKDD_RUN_ID",
                                                "fieldPath": "metadata.labels['pipeline/runid']"}]
        container = spec["deploymentSpec"]["executors"][name]["container"]
        assert container["image"] == DEFAULT_IMAGE
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env == {"SKDD_IMAGE": DEFAULT_IMAGE}   # nothing secret as a plain value
        assert "pip install" not in " ".join(container["command"])   # install_kfp_package=False


def test_graph_parameters_and_caching(committed):
    spec, _ = committed
    root = spec["root"]
    tasks = root["dag"]["tasks"]
    params = root["inputDefinitions"]["parameters"]
    assert {"artifact_root", "params_yaml", "dataset_source", "dataset_location", "dataset_name", "ipc_list", "loss",
            "architectures", "device", "s3_endpoint_url"} == set(params)
    from skdd.pipeline_cli import PARAM_TARGETS

    assert set(PARAM_TARGETS) <= set(params)
    assert params["artifact_root"]["defaultValue"].startswith("s3://")
    # the default preset is params.yaml, as one line that loads to the very same values
    assert "\n" not in params["params_yaml"]["defaultValue"]
    assert yaml.safe_load(params["params_yaml"]["defaultValue"]) == yaml.safe_load((ROOT / "params.yaml").read_text())
    # cached: every stage; never cached: the fingerprint, whose output is part of ingest's cache key
    assert tasks["fingerprint-source"].get("cachingOptions", {}).get("enableCache") is not True
    for name in ("ingest", "teacher", "pretrain", "pool", "distill", "report"):
        assert tasks[name]["cachingOptions"]["enableCache"] is True, name
    fp = tasks["ingest"]["inputs"]["parameters"]["source_fingerprint"]["taskOutputParameter"]
    assert fp["producerTask"] == "fingerprint-source"
    loop = next(t for t in tasks.values() if "parameterIterator" in t)
    inner = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert {"sample", "refine", "evaluate"} <= set(inner)
    assert all(inner[n]["cachingOptions"]["enableCache"] for n in ("sample", "refine", "evaluate"))
    # the probe reads the teacher; pool_source trajectories reads the pool
    assert set(tasks["distill"]["dependentTasks"]) == {"ingest", "pretrain", "teacher", "pool"}
    assert set(tasks["pool"]["dependentTasks"]) == {"ingest"}
    assert set(tasks["pretrain"]["dependentTasks"]) == {"ingest", "teacher"}
    assert set(tasks["teacher"]["dependentTasks"]) == {"ingest"}
    assert set(inner["refine"]["dependentTasks"]) == {"sample"}
    assert inner["evaluate"]["inputs"]["artifacts"]["synthetic"]["taskOutputArtifact"]["producerTask"] == "refine"
    # retried with backoff (a preempted pod's retry resumes from the checkpoints mirrored to S3)
    every = {**{n: t for n, t in tasks.items() if "parameterIterator" not in t}, **inner}
    assert set(every) == {"fingerprint-source", "ingest", "teacher", "pretrain", "pool", "distill", "sample", "refine",
                          "evaluate", "report"}
    for name, task in every.items():
        assert task["retryPolicy"] == {"maxRetryCount": 2, "backoffDuration": "60s", "backoffFactor": 2.0,
                                       "backoffMaxDuration": "3600s"}, name


def test_image_and_gpu_flags_change_the_compiled_spec(tmp_path, fake_credentials):
    out = tmp_path / "custom.yaml"
    image = "registry.example.com/team/skdd:test-1"
    compile_to(out, "--image", image, "--gpu-stages", "distill,evaluate", "--gpu-node-selector", "pool=a100",
               "--gpu-toleration", "dedicated=gpu:NoExecute", "--s3-secret", "team-s3", "--gpus", "2")
    spec, k8s = load_docs(out)
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor["container"]
        assert container["image"] == image, name
        assert {e["name"]: e["value"] for e in container["env"]}["SKDD_IMAGE"] == image
        assert k8s[name]["secretAsEnv"][0]["secretName"] == "team-s3"
    assert DEFAULT_IMAGE not in out.read_text()
    for name in ("exec-distill", "exec-evaluate"):
        assert spec["deploymentSpec"]["executors"][name]["container"]["resources"]["accelerator"]["resourceCount"] == "2"
        assert k8s[name]["nodeSelector"]["labels"] == {"pool": "a100"}
        assert k8s[name]["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "gpu",
                                             "effect": "NoExecute"}]
    assert "accelerator" not in spec["deploymentSpec"]["executors"]["exec-pretrain"]["container"].get("resources", {})
    for name in k8s:
        assert len(k8s[name]["secretAsEnv"]) == 1, name            # no signing unless asked for
    compile_to(out, "--gpu-node-selector", "none", "--gpu-toleration", "none", "--retries", "0",
               "--signing-secret", "team-signing")
    spec, k8s = load_docs(out)
    for name, platform in k8s.items():                            # every task signs; the key stays in the Secret
        assert {"secretName": "team-signing", "keyToEnv": [{"secretKey": "SKDD_SIGNING_KEY",
                                                            "envVar": "SKDD_SIGNING_KEY"}]} in [
            {k: v for k, v in s.items() if k in ("secretName", "keyToEnv")} for s in platform["secretAsEnv"]], name
    assert "nodeSelector" not in k8s["exec-distill"] and "tolerations" not in k8s["exec-distill"]
    assert "retryPolicy" not in spec["root"]["dag"]["tasks"]["distill"]


@pytest.mark.parametrize("flags, message", [
    (["--gpu-stages", "sample"], "GPU stage 'sample'"),
    (["--gpu-toleration", "nvidia.com/gpu"], "expected key[=value]:effect"),
    (["--gpu-node-selector", "novalue"], "expected KEY=VALUE"),
    (["--image", "has space:1"], "whitespace"),
    (["--retries", "-1"], "retries must be 0 or more"),
])
def test_bad_compile_flags_are_one_line(tmp_path, capsys, flags, message):
    assert main(["pipeline", "compile", "--output", str(tmp_path / "x.yaml"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("skdd pipeline compile: error:")
    assert not (tmp_path / "x.yaml").exists()


def test_a_bad_preset_stops_compile_naming_the_key(tmp_path, capsys):
    preset = tmp_path / "bad.yaml"
    preset.write_text("distill:\n  loss: fancy\n")
    assert main(["pipeline", "compile", "--output", str(tmp_path / "x.yaml"), "--params", str(preset)]) == 2
    assert "distill.loss: 'fancy' is not one of" in capsys.readouterr().err


def test_compile_without_params_outside_a_project_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["pipeline", "compile", "--output", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--params: params.yaml not found (default: params.yaml in the current folder)" in err[0]


def test_compile_and_submit_work_from_an_installed_wheel_outside_the_checkout(tmp_path):
    """components/ and pipelines/ ship in the wheel: nothing of the source tree is on the path."""
    import subprocess
    import sys

    import shutil

    wheels, site, work, tree = (tmp_path / d for d in ("wheels", "site", "elsewhere", "tree"))
    work.mkdir()
    tree.mkdir()
    for part in ("pyproject.toml", "README.md"):          # a copy to build from: the checkout gets no build/ folder
        shutil.copy(ROOT / part, tree / part)
    for part in ("src", "components", "pipelines"):
        shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(tree)], check=True, capture_output=True, cwd=tmp_path)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                    *map(str, wheels.glob("skdd-*.whl"))], check=True, capture_output=True)
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}     # ahead of the editable install's src/

    def skdd_cli(*args):
        return subprocess.run([sys.executable, "-c", "import sys, skdd, skdd.cli; print(skdd.__file__, "
                               "file=sys.stderr); sys.exit(skdd.cli.main(sys.argv[1:]))", *args],
                              capture_output=True, text=True, cwd=work, env=env)

    out = skdd_cli("pipeline", "compile", "--params", str(ROOT / "params.yaml"), "--output", str(work / "p.yaml"))
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith(str(site))                              # the installed copy ran
    assert (work / "p.yaml").read_text() == COMMITTED.read_text()        # the same pipeline as the checkout's
    out = skdd_cli("pipeline", "submit", "--host", "http://127.0.0.1:9", "--dry-run")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["package"] == str(site / "pipelines" / "skdd_pipeline.yaml")
    assert plan["package_sha256"] == __import__("hashlib").sha256(COMMITTED.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------- submit
class StandIn:
    """A threaded HTTP stand-in for the KFP v2beta1 API on 127.0.0.1 that records every request."""

    def __init__(self, fail_runs: bool = False):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                entry = {"method": self.command, "path": self.path, "raw": raw.decode(),
                         "body": json.loads(raw) if raw else None, "headers": dict(self.headers)}
                outer.requests.append(entry)
                return entry

            def do_GET(self):
                entry = self._record()
                path = entry["path"].split("?")[0]
                if path == "/apis/v2beta1/healthz":
                    self._answer(200, {"multi_user": False})
                elif path == "/apis/v2beta1/experiments":
                    self._answer(200, {"experiments": [], "total_size": 0})
                else:
                    self._answer(404, {"error": "not found"})

            def do_POST(self):
                entry = self._record()
                if entry["path"] == "/apis/v2beta1/experiments":
                    self._answer(200, {"experiment_id": "exp-0001",
                                       "display_name": entry["body"]["display_name"]})
                elif entry["path"] == "/apis/v2beta1/runs":
                    if outer.fail_runs:
                        self._answer(500, {"error": "pipeline spec rejected", "code": 13})
                    else:
                        self._answer(200, {"run_id": "run-0042", "display_name": entry["body"]["display_name"],
                                           "experiment_id": entry["body"]["experiment_id"]})
                else:
                    self._answer(404, {"error": "not found"})

        self.fail_runs = fail_runs
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def submit(*args: str) -> int:
    return main(["pipeline", "submit", *args])


def test_submit_sends_the_package_and_typed_params(tmp_path, capsys, fake_credentials):
    preset = tmp_path / "preset.yaml"
    preset.write_text((ROOT / "params" / "smoke.yaml").read_text())
    with StandIn() as api:
        code = submit("--host", api.url, "--experiment", "nightly", "--run-name", "smoke-1", "--preset", str(preset),
                      "--param", "artifact_root=s3://bucket/skdd", "--param", "ipc_list=1,10",
                      "--param", "loss=skd-nostand", "--param", "architectures=[convnet3, resnet18]")
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["run_id"] == "run-0042" and result["url"].endswith("/#/runs/details/run-0042")
    posts = {r["path"]: r for r in api.requests if r["method"] == "POST"}
    assert posts["/apis/v2beta1/experiments"]["body"]["display_name"] == "nightly"
    run = posts["/apis/v2beta1/runs"]["body"]
    assert run["display_name"] == "smoke-1" and run["experiment_id"] == "exp-0001"
    assert run["runtime_config"]["parameters"] == {
        "params_yaml": preset.read_text(), "ipc_list": [1, 10], "artifact_root": "s3://bucket/skdd",
        "loss": "skd-nostand", "architectures": ["convnet3", "resnet18"]}
    committed_spec, committed_platform = [d for d in yaml.safe_load_all(COMMITTED.read_text()) if d]
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "skdd"
    assert run["pipeline_spec"]["pipeline_spec"]["deploymentSpec"] == committed_spec["deploymentSpec"]
    assert run["pipeline_spec"]["platform_spec"] == committed_platform   # GPU placement and secret travel along
    everything = json.dumps(api.requests)
    assert FAKE_KEY_ID not in everything and FAKE_SECRET not in everything


def test_submit_dry_run_prints_the_plan_without_network(capsys):
    with StandIn() as api:
        assert submit("--host", api.url, "--dry-run", "--param", "ipc_list=[1, 10, 50]", "--param", "device=cpu",
                      "--no-cache") == 0
    assert api.requests == []
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] is True and plan["enable_caching"] is False
    assert plan["arguments"] == {"ipc_list": [1, 10, 50], "device": "cpu"}
    assert plan["package"] == str(COMMITTED) and len(plan["package_sha256"]) == 64


@pytest.mark.parametrize("param, message", [
    ("colour=blue", "--param colour: not a parameter of the pipeline"),
    ("ipc_list=many", "--param ipc_list: sample.ipc: expected an integer"),
    ("loss=fancy", "--param loss: distill.loss: 'fancy' is not one of"),
    ("architectures=convnet3,nosuchnet", "--param architectures: evaluate.architectures[1]: unknown architecture"),
    ("noequals", "expected KEY=VALUE"),
    ("ipc_list=[]", "--param ipc_list: give at least one IPC"),
    ("ipc_list=10,10", "lists an IPC twice"),
    ("params_yaml=evaluate: {trials: 0}", "params_yaml: evaluate.trials: must be >= 1"),
    ("params_yaml=distill: {tau: .nan}", "params_yaml: distill.tau: must be a finite number"),
])
def test_submit_bad_param_is_one_line(capsys, param, message):
    assert submit("--host", "http://127.0.0.1:9", "--dry-run", "--param", param) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("skdd pipeline submit: error:")


def test_submit_to_an_unreachable_host_is_one_line(capsys):
    with socket.socket() as s:   # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert submit("--host", f"http://127.0.0.1:{port}") == 2
    err = capsys.readouterr().err.strip()
    assert "cannot reach the Kubeflow Pipelines API" in err and len(err.splitlines()) == 1


def test_submit_api_error_is_one_line(capsys):
    with StandIn(fail_runs=True) as api:
        assert submit("--host", api.url, "--run-name", "x") == 2
    err = capsys.readouterr().err.strip()
    assert "answered 500" in err and "pipeline spec rejected" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------------------- the step helper
def fake_output(tmp_path: Path, name: str) -> SimpleNamespace:
    return SimpleNamespace(path=str(tmp_path / "kfp" / name), metadata={})


def npz_preset(npz: Path) -> str:
    return yaml.safe_dump({"ingest": {"name": "tiny", "source": "npz", "location": str(npz), "val_per_class": 2}})


@pytest.fixture
def no_data_env(monkeypatch):
    for name in ("SKDD_DATA_SOURCE", "SKDD_DATA_LOCATION"):
        monkeypatch.delenv(name, raising=False)


def test_step_writes_content_keyed_artifacts_and_reuses_them(tmp_path, capsys, no_data_env):
    npz = tiny_npz(tmp_path / "tiny.npz")
    preset = npz_preset(npz)
    fingerprint = kfp_steps.source_fingerprint(preset)
    first = fake_output(tmp_path, "a")
    facts = kfp_steps.run_step("ingest", {"manifest.json": first}, params_yaml=preset,
                               artifact_root=str(tmp_path / "store"), key_extra=fingerprint)
    uri = Path(facts["uri"])
    assert uri.parent == tmp_path / "store" / "ingest" and (uri / "manifest.json").is_file()
    assert first.metadata["kind"] == "dataset" and first.metadata["train_images"] == 100
    assert Path(first.path).read_bytes() == (uri / "manifest.json").read_bytes()
    created = json.loads((uri / "manifest.json").read_text())["created"]
    capsys.readouterr()
    second = fake_output(tmp_path, "b")
    again = kfp_steps.run_step("ingest", {"manifest.json": second}, params_yaml=preset,
                               artifact_root=str(tmp_path / "store"), key_extra=fingerprint)
    assert again == facts and "reusing" in capsys.readouterr().out
    assert json.loads((uri / "manifest.json").read_text())["created"] == created
    # changed data: a new fingerprint, so a new key (and a KFP cache miss, as the fingerprint is an input)
    tiny_npz(npz, seed=1)
    changed = kfp_steps.source_fingerprint(preset)
    assert changed != fingerprint
    third = kfp_steps.run_step("ingest", {"manifest.json": fake_output(tmp_path, "c")}, params_yaml=preset,
                               artifact_root=str(tmp_path / "store"), key_extra=changed)
    assert third["uri"] != facts["uri"]
    # a changed param: a new key
    other = kfp_steps.run_step("ingest", {"manifest.json": fake_output(tmp_path, "d")}, params_yaml=preset,
                               artifact_root=str(tmp_path / "store"), key_extra=changed,
                               options={"rows_per_shard": 50})
    assert other["uri"] != third["uri"]
    # a tampered artifact at a content key is refused, never silently reused or overwritten
    shard = next((Path(other["uri"]) / "train").iterdir())
    shard.write_bytes(shard.read_bytes()[:-1] + b"\0")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:   # in the component: one line and exit 2, as the CLI
        kfp_steps.run_step("ingest", {"manifest.json": fake_output(tmp_path, "e")}, params_yaml=preset,
                           artifact_root=str(tmp_path / "store"), key_extra=changed, options={"rows_per_shard": 50})
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("skdd ingest: error:") and "fails verification" in err


def test_fingerprint_follows_folder_contents(tmp_path, no_data_env):
    folder = tmp_path / "imgs"
    (folder / "train" / "a").mkdir(parents=True)
    (folder / "train" / "a" / "x.png").write_bytes(b"one")
    preset = yaml.safe_dump({"ingest": {"source": "imagefolder", "location": str(folder)}})
    before = kfp_steps.source_fingerprint(preset)
    assert before == kfp_steps.source_fingerprint(preset)
    (folder / "train" / "a" / "x.png").write_bytes(b"two")
    assert kfp_steps.source_fingerprint(preset) != before
    tv = yaml.safe_dump({"ingest": {"source": "torchvision", "name": "mnist", "location": str(tmp_path / "none")}})
    assert kfp_steps.source_fingerprint(tv).startswith("sha256:")   # fixed URLs and md5s: no download
    with pytest.raises(SkddError, match="source not found"):
        kfp_steps.source_fingerprint(preset, {"location": str(tmp_path / "missing")})
    with pytest.raises(SystemExit):
        kfp_steps.fingerprint_step(preset, {"location": str(tmp_path / "missing")})


def test_step_options_and_labels():
    assert kfp_steps.overrides_from({"ipc": 10.0, "loss": "gan-only", "device": "", "architectures": [],
                                     "pool": ["convnet3"], "lr": 0.5}) == [
        "ipc=10", 'loss="gan-only"', 'pool=["convnet3"]', "lr=0.5"]
    assert kfp_steps.evaluation_label("gan-only", "") == "gan-only"
    assert kfp_steps.evaluation_label("", "distill:\n  loss: dim-mse\n") == "dim-mse"
    assert kfp_steps.evaluation_label("", "") == "skd"
    with pytest.raises(SkddError, match="no skdd artifact URI"):
        kfp_steps.artifact_uri(SimpleNamespace(metadata={}), "dataset")
    with pytest.raises(SkddError, match="artifact_root"):
        kfp_steps.output_uri("  ", "ingest", "k")
    assert kfp_steps.output_uri("s3://b/p/", "sample", "abc") == "s3://b/p/sample/abc"


def test_components_follow_the_stage_registry():
    """One component module per stage the registry marks `component`, each defining a function of that name."""
    from components import FUNCTIONS
    from skdd.pipeline_cli import PRESET_STAGES
    from skdd.stages.registry import STAGES

    stages = {name for name, spec in STAGES.items() if spec.component}
    assert {p.stem for p in (ROOT / "components").glob("*.py")} - {"__init__"} == stages | {"fingerprint", "reproduce"}
    assert set(FUNCTIONS) == stages | {"fingerprint_source", "collect_evaluations", "reproduce_results"}
    assert set(PRESET_STAGES) == stages
    assert all(FUNCTIONS[name].__name__ == name for name in stages)
