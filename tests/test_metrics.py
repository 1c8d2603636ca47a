"""`skdd.telemetry`: what the loops report, the textfile, and pushes to a real Pushgateway (Debian's
`prometheus-pushgateway` on 127.0.0.1) or to one that is down or hangs, which must not fail or slow a stage."""

from __future__ import annotations

import base64
import http.server
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from skdd import lineage, storage, telemetry
from skdd.stages.registry import run_stage
from skdd.errors import SkddError
from skdd.stages.loop import run_steps

from helpers import TINY_PRETRAIN, ingest_tiny

PUSHGATEWAY = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"
needs_pushgateway = pytest.mark.skipif(not Path(PUSHGATEWAY).is_file(),
                                       reason="prometheus-pushgateway not installed (apt-get install "
                                              "prometheus-pushgateway; .ci/run does)")


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(name, labels): value} of a text exposition."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(series: dict, metric: str, /, **labels: str) -> float:
    hits = [v for (n, ls), v in series.items() if n == metric and set(labels.items()) <= ls]
    assert len(hits) == 1, f"{metric}{labels}: {len(hits)} matching series"
    return hits[0]


class FakeTrainer:
    """What `run_steps` drives, minus the model: fixed losses and the distill-style non-float entry."""

    def step(self) -> dict:
        return {"loss_g": 0.5, "loss_d": -1.25, "pool": "convnet3"}

    def modules(self) -> dict:
        return {}

    def optimizers(self) -> dict:
        return {}

    def state_tensors(self) -> dict:
        return {}

    def meta(self) -> dict:
        return {}

    def resume(self, ckpt) -> None:
        raise AssertionError("nothing to resume")


def fake_stage(out: Path, steps: int = 5, fail: bool = False) -> None:
    """A stage body as the real ones are: staged output, the shared step loop, manifest last."""
    with storage.staged_output(out) as stage:
        run_steps(FakeTrainer(), name="fake", ckpts=storage.checkpointer(out, "h"), steps=steps, log_every=100,
                  checkpoint_every=10**6, images_per_step=8)
        if fail:
            raise RuntimeError("boom")
        (stage / "weights.bin").write_bytes(b"w")
        lineage.write_manifest(stage, kind="gan", stage="pretrain", params={}, params_hash="h")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("SKDD_PUSHGATEWAY", "SKDD_RUN_ID", "SKDD_PUSH_INTERVAL", "SKDD_PUSH_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------------------ unit
def test_loop_reports_into_the_stage_registry():
    with telemetry.stage_metrics("distill") as m:
        assert telemetry.current() is m
        telemetry.set_planned(7)
        telemetry.report_step(3, {"loss_g": 0.25, "loss_match": 1.5, "pool": "resnet10"}, 120.0)
        telemetry.report_accuracy(dataset="mnist", architecture="convnet3", ipc=None, protocol="strict",
                                label="full dataset", mean=98.5, std=0.25)
        running = samples(generate_latest(m.registry).decode())
    assert telemetry.current() is None
    assert value(running, "skdd_step", stage="distill") == 3
    assert value(running, "skdd_steps_planned", stage="distill") == 7
    assert value(running, "skdd_loss", stage="distill", name="loss_match") == 1.5
    assert not [k for k in running if k[0] == "skdd_loss" and ("name", "pool") in k[1]]
    assert value(running, "skdd_images_per_second", stage="distill") == 120.0
    assert value(running, "skdd_stage_status", stage="distill", status="running") == 1
    acc = {"architecture": "convnet3", "ipc": "full", "protocol": "strict", "label": "full dataset"}
    assert value(running, "skdd_eval_accuracy_percent", **acc) == 98.5
    assert value(running, "skdd_eval_accuracy_std_percent", **acc) == 0.25
    final = samples(generate_latest(m.registry).decode())
    assert value(final, "skdd_stage_status", status="succeeded") == 1
    assert value(final, "skdd_stage_last_success_timestamp_seconds") > 0


def test_reporting_outside_a_stage_is_a_no_op():
    assert telemetry.current() is None
    telemetry.set_planned(3)
    telemetry.report_step(1, {"loss": 1.0}, 5.0)
    telemetry.report_accuracy(dataset="d", architecture="a", ipc=1, protocol="strict", label="l", mean=1, std=0)


def test_registries_are_per_run_and_run_id_from_env(monkeypatch):
    with telemetry.stage_metrics("pretrain") as a:
        pass
    with telemetry.stage_metrics("pretrain") as b:   # same names again: no "Duplicated timeseries" error
        pass
    assert a.registry is not b.registry and a.run_id == b.run_id   # one generated id per process
    monkeypatch.setenv("SKDD_RUN_ID", "kfp-run-42")
    with telemetry.stage_metrics("pretrain") as c:
        pass
    assert value(samples(generate_latest(c.registry).decode()), "skdd_run_info", run_id="kfp-run-42") == 1


def test_textfile_is_written_after_the_manifest_and_not_hashed(tmp_path):
    out = tmp_path / "gan"
    with telemetry.stage_metrics("pretrain", out):
        fake_stage(out, steps=5)
    series = samples((out / telemetry.TEXTFILE).read_text())
    assert value(series, "skdd_step", stage="pretrain") == 5
    assert value(series, "skdd_loss", stage="pretrain", name="loss_d") == -1.25
    assert value(series, "skdd_stage_status", stage="pretrain", status="succeeded") == 1
    assert value(series, "skdd_stage_duration_seconds", stage="pretrain") > 0
    manifest = lineage.verify_artifact(out, "gan")
    assert [f["path"] for f in manifest["files"]] == ["weights.bin"]   # telemetry is not artifact content


def test_failed_run_leaves_its_textfile_in_staging_and_a_rerun_does_not_publish_it(tmp_path):
    out = tmp_path / "gan"
    with pytest.raises(RuntimeError), telemetry.stage_metrics("pretrain", out):
        fake_stage(out, steps=3, fail=True)
    stale = storage.staging_dir(out) / telemetry.TEXTFILE
    assert value(samples(stale.read_text()), "skdd_stage_status", status="failed") == 1
    assert not out.exists()
    with telemetry.stage_metrics("pretrain", out):
        fake_stage(out, steps=4)
    assert value(samples((out / telemetry.TEXTFILE).read_text()), "skdd_stage_status", status="succeeded") == 1
    assert "metrics.prom" not in {f["path"] for f in lineage.read_manifest(out)["files"]}


def test_bad_push_interval_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SKDD_PUSHGATEWAY", "127.0.0.1:1")
    monkeypatch.setenv("SKDD_PUSH_INTERVAL", "soon")
    with pytest.raises(SkddError, match="SKDD_PUSH_INTERVAL"), telemetry.stage_metrics("pretrain"):
        pass


class _Recorder(http.server.BaseHTTPRequestHandler):
    requests: list[tuple[str, str, str | None]] = []

    def do_PUT(self):   # noqa: N802 -- http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.requests.append(("PUT", self.path, self.headers.get("Authorization")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_credentials_in_the_url_go_to_basic_auth_not_to_logs(monkeypatch, capsys):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("SKDD_PUSHGATEWAY", f"http://alice:s3cret@127.0.0.1:{server.server_port}")
        monkeypatch.setenv("SKDD_RUN_ID", "r1")
        with telemetry.stage_metrics("sample"):
            pass
    finally:
        server.shutdown()
        server.server_close()
    assert _Recorder.requests, "nothing was pushed"
    method, path, auth = _Recorder.requests[-1]
    assert path == "/metrics/job/skdd/run_id/r1/stage/sample"
    assert auth == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    url, _ = telemetry._split_credentials("https://alice:s3cret@gw.example:9091/prefix")
    assert url == "https://gw.example:9091/prefix"
    monkeypatch.setenv("SKDD_PUSHGATEWAY", f"http://alice:s3cret@127.0.0.1:{closed_port()}")
    with telemetry.stage_metrics("sample"):
        pass
    err = capsys.readouterr().err
    assert "warning" in err and "s3cret" not in err and "alice" not in err


# ------------------------------------------------------------------------------------------------ gateways
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def pushgateway(tmp_path):
    """The real Pushgateway on a free loopback port, without persistence; yields its base URL."""
    port = closed_port()
    log = open(tmp_path / "pushgateway.log", "wb")
    proc = subprocess.Popen([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}"], stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "pushgateway.log").read_text()
            assert time.time() < deadline, "pushgateway not ready in 20 s"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def scrape(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        return samples(resp.read().decode())


@needs_pushgateway
@pytest.mark.integration
def test_real_stages_push_to_the_pushgateway(pushgateway, tmp_path, monkeypatch, capsys):
    data = ingest_tiny(tmp_path)          # before the gateway is set: its textfile is the local mode
    assert (data / telemetry.TEXTFILE).is_file()
    monkeypatch.setenv("SKDD_PUSHGATEWAY", pushgateway)
    monkeypatch.setenv("SKDD_RUN_ID", "itest-1")
    gan = tmp_path / "gan"
    run_stage("pretrain", output=str(gan), inputs={"dataset": str(data)}, overrides=TINY_PRETRAIN + ["steps=4"])
    sel = tmp_path / "sel"
    run_stage("select", output=str(sel), inputs={"dataset": str(data)},
              overrides=["method=random", "ipc=2", "device=cpu"])
    run_stage("evaluate", output=str(tmp_path / "ev"), inputs={"dataset": str(data), "synthetic": str(sel)},
              overrides=["width=8", "device=cpu", "epochs=2", "trials=2"])
    assert "warning" not in capsys.readouterr().err
    assert not (gan / telemetry.TEXTFILE).exists(), "push mode writes no textfile"

    series = scrape(pushgateway)
    group = {"job": "skdd", "run_id": "itest-1", "stage": "pretrain"}
    assert value(series, "skdd_step", **group) == 4
    assert value(series, "skdd_steps_planned", **group) == 4
    assert value(series, "skdd_stage_status", **group, status="succeeded") == 1
    assert value(series, "skdd_stage_status", **group, status="running") == 0
    assert value(series, "skdd_images_per_second", **group) > 0
    assert value(series, "skdd_stage_duration_seconds", **group) > 0
    assert {"loss_g", "loss_d"} <= {dict(ls)["name"] for (n, ls), _ in series.items()
                                    if n == "skdd_loss" and ("stage", "pretrain") in ls}
    ev = {"job": "skdd", "run_id": "itest-1", "stage": "evaluate"}
    accuracy = value(series, "skdd_eval_accuracy_percent", **ev, architecture="convnet3", ipc="2",
                     protocol="strict", label="random", dataset="tiny")
    assert 0 <= accuracy <= 100
    assert value(series, "skdd_step", **ev) == 2   # (architecture, trial) units
    assert value(series, "skdd_stage_status", job="skdd", run_id="itest-1", stage="select",
                 status="succeeded") == 1


@pytest.mark.integration
def test_unreachable_gateway_warns_once_and_the_stage_completes(tmp_path, monkeypatch, capsys):
    data = ingest_tiny(tmp_path)
    monkeypatch.setenv("SKDD_PUSHGATEWAY", f"127.0.0.1:{closed_port()}")
    monkeypatch.setenv("SKDD_PUSH_INTERVAL", "0.05")   # many failed pushes, still one line
    manifest = run_stage("pretrain", output=str(tmp_path / "gan"), inputs={"dataset": str(data)},
                         overrides=TINY_PRETRAIN + ["steps=4"])
    assert manifest["metrics"]["steps"] == 4
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "metrics push" in warnings[0] and "carrying on" in warnings[0], warnings


def test_hanging_gateway_neither_blocks_the_steps_nor_the_end(tmp_path, monkeypatch, capsys):
    """A server that accepts connections and never answers: the step loop runs at full speed, the end of the
    stage waits at most about 2 x SKDD_PUSH_TIMEOUT, and there is one warning line."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)   # the kernel completes the handshakes; nobody ever reads or replies
        monkeypatch.setenv("SKDD_PUSHGATEWAY", f"127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("SKDD_PUSH_TIMEOUT", "1")
        out = tmp_path / "gan"
        t0 = time.monotonic()
        with telemetry.stage_metrics("pretrain", out):
            time.sleep(0.1)                     # the first push is now in flight and stuck
            t_loop = time.monotonic()
            fake_stage(out, steps=2000)
            loop_seconds = time.monotonic() - t_loop
            t_end = time.monotonic()
        end_seconds = time.monotonic() - t_end
    assert loop_seconds < 1.0, f"2000 steps took {loop_seconds:.2f} s with a hanging gateway"
    assert end_seconds < 2 * 1 + 1.5, f"the end of the stage took {end_seconds:.2f} s"
    assert time.monotonic() - t0 < 6
    assert (out / "manifest.json").is_file()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "metrics push" in warnings[0], warnings
