"""Prometheus metrics of one stage run: pushed to a Pushgateway, or written to `<out>/metrics.prom`.

`skdd.stages.registry.run_stage` wraps every stage in `stage_metrics(stage, output)`, so every stage reports its
duration and status; the long loops (`stages.loop.run_steps` for pretrain/distill, `stages.evaluate`) add
progress and results through the module functions `set_planned`, `report_step` and `report_accuracy`,
which are cheap no-ops outside a stage context (benchmarks, unit tests). The step loop only updates
in-memory gauges; all network I/O happens on a background thread, so a slow gateway never slows training.

Each run has its own `CollectorRegistry` (not prometheus_client's global one), so repeated or nested runs in
one process (tests, a pipeline run in-process) never collide.

Series (the names and label names are stable; dashboards and alerts may rely on them). Every series has a
`stage` label; in push mode the Pushgateway adds `job="skdd"`, `run_id` and `instance=""`:
  skdd_run_info{stage, run_id}                              1: names the run in a textfile too
  skdd_stage_start_timestamp_seconds{stage}                 when the stage started (Unix time)
  skdd_stage_duration_seconds{stage}                        wall time so far while running, final at the end
  skdd_stage_status{stage, status}                          1 for the current status, 0 for the others;
                                                            status is one of running, succeeded, failed
  skdd_stage_last_success_timestamp_seconds{stage}          present once the stage succeeded
  skdd_step{stage}                                          last completed step: generator steps for pretrain
                                                            and distill (a resumed run continues the count),
                                                            finished (architecture, trial) units for evaluate
  skdd_steps_planned{stage}                                 the step count the stage will reach
  skdd_loss{stage, name}                                    last value of each loss (loss_g, loss_d, loss_match,
                                                            loss_pool; evaluate: train_loss of the last trial)
  skdd_images_per_second{stage}                             training throughput of this process
  skdd_eval_accuracy_percent{stage, dataset, architecture, ipc, protocol, label}
                                                            mean test accuracy over the trials (ipc "full" for
                                                            the full training set; protocol strict or dim)
  skdd_eval_accuracy_std_percent{...same labels}            its population std over the trials

Environment:
  SKDD_PUSHGATEWAY    Pushgateway address (`host:port` or `http[s]://[user:pass@]host:port`). Set: metrics are
                      pushed (PUT, job "skdd", grouping key run_id + stage) at the start, every
                      SKDD_PUSH_INTERVAL seconds and once at the end. A failed push prints ONE warning line on
                      stderr (credentials removed) and the stage carries on; the end waits at most about twice
                      SKDD_PUSH_TIMEOUT. Unset: `metrics.prom` (text format, for node_exporter's textfile
                      collector) is written into the published output, or into `<out>.partial/` if it failed.
  SKDD_RUN_ID         groups the stages of one pipeline run (the Kubeflow pipeline sets it); unset: one id per
                      process, `YYYYmmddTHHMMSSZ-<6 hex>` (UTC start time and random bits).
  SKDD_PUSH_INTERVAL  seconds between periodic pushes (default 15).
  SKDD_PUSH_TIMEOUT   seconds one push may take before it counts as failed (default 3).

`metrics.prom` is run telemetry (timings), not artifact content: it is written after the manifest and is not
listed in it, so two runs with the same params and seed still give the same file hashes.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile
from prometheus_client.exposition import basic_auth_handler, default_handler

from skdd import storage
from skdd.errors import SkddError

JOB = "skdd"
TEXTFILE = "metrics.prom"
STATUSES = ("running", "succeeded", "failed")
_current: contextvars.ContextVar[StageMetrics | None] = contextvars.ContextVar("skdd_metrics", default=None)
_process_run_id: str | None = None


def run_id() -> str:
    """`SKDD_RUN_ID`, else one generated id for this process (so in-process stage chains share it)."""
    global _process_run_id
    if os.environ.get("SKDD_RUN_ID"):
        return os.environ["SKDD_RUN_ID"]
    if _process_run_id is None:
        _process_run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
    return _process_run_id


class StageMetrics:
    """The registry of one stage run and the gauges in it (see the module docstring for the series)."""

    def __init__(self, stage: str, run: str):
        self.stage, self.run_id = stage, run
        self.registry = CollectorRegistry()

        def gauge(name: str, doc: str, *labels: str) -> Gauge:
            return Gauge(name, doc, ("stage", *labels), registry=self.registry)

        gauge("skdd_run_info", "The run this stage belongs to", "run_id").labels(stage, run).set(1)
        self._status = gauge("skdd_stage_status", "1 for the stage's current status", "status")
        self._success = gauge("skdd_stage_last_success_timestamp_seconds", "When the stage last succeeded")
        self._step = gauge("skdd_step", "Last completed step").labels(stage)
        self._planned = gauge("skdd_steps_planned", "Steps the stage will reach").labels(stage)
        self._loss = gauge("skdd_loss", "Last value of each loss", "name")
        self._rate = gauge("skdd_images_per_second", "Training images per second in this process").labels(stage)
        acc_labels = ("dataset", "architecture", "ipc", "protocol", "label")
        self._acc = gauge("skdd_eval_accuracy_percent", "Mean test accuracy over the trials", *acc_labels)
        self._acc_std = gauge("skdd_eval_accuracy_std_percent", "Std (ddof=0) of the test accuracy", *acc_labels)
        self._losses: dict[str, Gauge] = {}
        self.started, self._t0 = time.time(), time.monotonic()
        self._end: float | None = None
        gauge("skdd_stage_start_timestamp_seconds", "When the stage started").labels(stage).set(self.started)
        gauge("skdd_stage_duration_seconds", "Wall time of the stage").labels(stage).set_function(
            lambda: (self._end if self._end is not None else time.monotonic()) - self._t0)
        self.set_status("running")

    def set_status(self, status: str) -> None:
        for s in STATUSES:
            self._status.labels(self.stage, s).set(1 if s == status else 0)

    def finish(self, ok: bool) -> None:
        self._end = time.monotonic()
        self.set_status("succeeded" if ok else "failed")
        if ok:
            self._success.labels(self.stage).set(time.time())

    def planned(self, steps: int) -> None:
        self._planned.set(steps)

    def step(self, step: int, losses: Mapping[str, object], images_per_second: float | None = None) -> None:
        self._step.set(step)
        for name, value in losses.items():
            if isinstance(value, float):   # skip non-numeric entries such as distill's pool model name
                child = self._losses.get(name)
                if child is None:
                    child = self._losses[name] = self._loss.labels(self.stage, name)
                child.set(value)
        if images_per_second is not None and math.isfinite(images_per_second):
            self._rate.set(images_per_second)

    def accuracy(self, *, dataset: str, architecture: str, ipc: int | None, protocol: str, label: str,
                 mean: float, std: float) -> None:
        labels = (self.stage, dataset, architecture, "full" if ipc is None else str(ipc), protocol, label)
        self._acc.labels(*labels).set(mean)
        self._acc_std.labels(*labels).set(std)


# ------------------------------------------------------------------- reporting from the loops (no-op outside)
def current() -> StageMetrics | None:
    return _current.get()


def set_planned(steps: int) -> None:
    m = _current.get()
    if m is not None:
        m.planned(steps)


def report_step(step: int, losses: Mapping[str, object], images_per_second: float | None = None) -> None:
    m = _current.get()
    if m is not None:
        m.step(step, losses, images_per_second)


def report_accuracy(**kwargs) -> None:
    """Keyword arguments of `StageMetrics.accuracy`."""
    m = _current.get()
    if m is not None:
        m.accuracy(**kwargs)


# ------------------------------------------------------------------- push
def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    try:
        value = float(text) if text else default
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise SkddError(f"{name}: expected a positive number of seconds, got {text!r}")
    return value


def _split_credentials(url: str) -> tuple[str, Callable]:
    """The URL without `user:pass@` (safe to print) and the handler that sends them as Basic auth."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.username is None and parts.password is None:
        return urlunsplit(parts), default_handler
    netloc = parts.hostname or ""
    netloc = f"[{netloc}]" if ":" in netloc else netloc
    netloc += f":{parts.port}" if parts.port else ""
    user, password = parts.username, parts.password

    def handler(url: str, method: str, timeout: float | None, headers: list, data: bytes) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, user, password)

    return urlunsplit(parts._replace(netloc=netloc)), handler


class _Pusher:
    """Pushes from a daemon thread; the final push runs on the caller's thread, after the thread's last one."""

    def __init__(self, gateway: str, metrics: StageMetrics, interval: float, timeout: float):
        self.url, self.handler = _split_credentials(gateway)
        self.metrics, self.interval, self.timeout = metrics, interval, timeout
        self._lock, self._stop, self._warned = threading.Lock(), threading.Event(), False
        self._warn_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="skdd-metrics-push", daemon=True)

    def _push(self) -> None:
        try:
            push_to_gateway(self.url, job=JOB, registry=self.metrics.registry, timeout=self.timeout,
                            grouping_key={"run_id": self.metrics.run_id, "stage": self.metrics.stage},
                            handler=self.handler)
        except Exception as exc:   # noqa: BLE001 -- any failure of monitoring must leave the stage running
            self._warn(f"{type(exc).__name__}: {exc}")

    def _warn(self, why: str) -> None:
        with self._warn_lock:
            if self._warned:
                return
            self._warned = True
            why = " ".join(why.split())[:200]
            print(f"skdd {self.metrics.stage}: warning: metrics push to {self.url} failed ({why}); carrying on, "
                  "further push errors are not shown", file=sys.stderr, flush=True)

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                self._push()
            if self._stop.wait(self.interval):
                return

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """The final push, bounded: wait at most `timeout` for an in-flight push, then push once more."""
        self._stop.set()
        if self._lock.acquire(timeout=self.timeout):
            try:
                self._push()
            finally:
                self._lock.release()
        else:
            self._warn(f"no answer within {self.timeout:g} s")


# ------------------------------------------------------------------- the stage context
def _write_textfile(metrics: StageMetrics, output: str | Path, ok: bool) -> None:
    try:
        folder = storage.local_path(output) if ok else storage.staging_dir(output)
        if folder.is_dir():
            write_to_textfile(str(folder / TEXTFILE), metrics.registry)
    except (OSError, SkddError) as exc:
        print(f"skdd {metrics.stage}: warning: could not write {TEXTFILE}: {exc}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def stage_metrics(stage: str, output: str | Path | None = None) -> Iterator[StageMetrics]:
    """Collect the metrics of one stage run; push them, or write `metrics.prom` for `output` at the end."""
    metrics = StageMetrics(stage, run_id())
    gateway = os.environ.get("SKDD_PUSHGATEWAY", "").strip()
    pusher = None
    if gateway:
        pusher = _Pusher(gateway, metrics, _seconds("SKDD_PUSH_INTERVAL", 15.0), _seconds("SKDD_PUSH_TIMEOUT", 3.0))
    elif output is not None:
        with contextlib.suppress(OSError, SkddError):   # a failed earlier run's file: never publish it
            (storage.staging_dir(output) / TEXTFILE).unlink(missing_ok=True)
    token = _current.set(metrics)
    if pusher is not None:
        pusher.start()
    ok = False
    try:
        yield metrics
        ok = True
    finally:
        _current.reset(token)
        metrics.finish(ok)
        if pusher is not None:
            pusher.close()
        elif output is not None:
            _write_textfile(metrics, output, ok)
