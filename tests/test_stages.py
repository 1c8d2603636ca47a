"""The stages end to end on small real data, through the CLI, plus every bad input a user can hand them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from skdd import lineage
from skdd.cli import main
from skdd.stages.registry import run_stage
from skdd.data.parquet import read_shards
from skdd.errors import SkddError

from helpers import MNIST, TINY_DISTILL, TINY_PRETRAIN, ingest_tiny

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """ingest → teacher, pretrain → distill → sample (kept by the teacher, params.yaml's selection) on the real
    MNIST files (tiny widths, a few steps)."""
    if not MNIST.is_dir():
        pytest.skip("../shared/datasets/mnist not present")
    root = tmp_path_factory.mktemp("chain")
    paths = {k: root / k for k in ("data", "teacher", "gan", "dist", "syn")}
    assert main(["ingest", "--out", str(paths["data"]), "--set", f"location={MNIST}", "--set", "source=idx"]) == 0
    assert main(["pretrain", "--dataset", str(paths["data"]), "--out", str(paths["gan"]),
                 *sum((["--set", o] for o in TINY_PRETRAIN + ["steps=6"]), [])]) == 0
    assert main(["distill", "--dataset", str(paths["data"]), "--gan", str(paths["gan"]), "--out", str(paths["dist"]),
                 *sum((["--set", o] for o in TINY_DISTILL + ["steps=4"]), [])]) == 0
    assert main(["teacher", "--dataset", str(paths["data"]), "--out", str(paths["teacher"]), "--set", "width=8",
                 "--set", "epochs=1", "--set", "device=cpu"]) == 0
    assert main(["sample", "--gan", str(paths["dist"]), "--teacher", str(paths["teacher"]), "--out", str(paths["syn"]),
                 "--set", "ipc=3", "--set", "device=cpu"]) == 0
    return paths


def test_chain_outputs_and_lineage(chain):
    data = lineage.verify_artifact(chain["data"], "dataset")
    # params.yaml holds 500 per class out of MNIST's 60000 training images into val/
    assert data["dataset"]["counts"] == {"train": 55000, "val": 5000, "test": 10000}
    assert data["dataset"]["class_counts"]["train"][:3] == [5923 - 500, 6742 - 500, 5958 - 500]
    assert [round(v, 4) for v in data["dataset"]["mean"]] == [0.1306]   # of the remaining training images
    assert len(data["sources"]) == 4 and all(len(s["sha256"]) == 64 for s in data["sources"])

    gan = lineage.verify_artifact(chain["gan"], "gan")
    dist = lineage.verify_artifact(chain["dist"], "gan")
    syn = lineage.verify_artifact(chain["syn"], "dataset")
    assert gan["inputs"][0]["manifest_sha256"] == lineage.sha256_file(chain["data"] / "manifest.json")
    assert [i["name"] for i in dist["inputs"]] == ["dataset", "gan"]
    header, *rows = (chain["dist"] / "curves.csv").read_text().splitlines()
    header = header.split(",")
    # params.yaml distills with balanced λ: the λ it reports is the median of the scales its logged steps used
    # (the paper's fixed λ per dataset is tests/test_distill.py's default_lambda test)
    assert dist["params"]["lambda_mode"] == "balanced"
    scales = sorted(float(r.split(",")[header.index("lambda")]) for r in rows)
    assert dist["resolved"]["lambda"] == pytest.approx(scales[len(scales) // 2], rel=1e-5) and scales[0] > 0
    assert syn["inputs"][0]["manifest_sha256"] == lineage.sha256_file(chain["dist"] / "manifest.json")
    for manifest in (data, gan, dist, syn):
        assert manifest["code"]["skdd"] and manifest["params_hash"] and manifest["environment"]["torch"]


def test_sample_is_ipc_per_class_and_seeded(chain, tmp_path):
    syn = read_shards(chain["syn"] / "train")
    assert syn.images.shape == (30, 1, 28, 28) and syn.class_counts() == [3] * 10
    grid = Image.open(chain["syn"] / "grid.png")
    assert grid.size[1] > grid.size[0] * 0.9       # 10 rows (classes) of 3 columns: taller than wide
    again = tmp_path / "syn2"
    inputs = {"gan": str(chain["dist"]), "teacher": str(chain["teacher"])}
    run_stage("sample", output=str(again), inputs=inputs, params_file="params.yaml", overrides=["ipc=3", "device=cpu"])
    assert (again / "train" / "part-00000.parquet").read_bytes() == \
        (chain["syn"] / "train" / "part-00000.parquet").read_bytes()
    other = tmp_path / "syn3"
    run_stage("sample", output=str(other), inputs=inputs, params_file="params.yaml",
              overrides=["ipc=3", "device=cpu", "seed=1"])
    assert not torch.equal(read_shards(other / "train").images, syn.images)


def test_curves_written(chain):
    header = (chain["dist"] / "curves.csv").read_text().splitlines()[0].split(",")
    assert {"step", "loss_g", "loss_d", "loss_match", "loss_pool"} <= set(header)


def test_gan_only_control_skips_matching(chain, tmp_path):
    out = tmp_path / "ganonly"
    manifest = run_stage("distill", output=str(out), inputs={"dataset": str(chain["data"]), "gan": str(chain["gan"])},
                         overrides=TINY_DISTILL + ["steps=2", "loss=gan-only"])
    assert manifest["metrics"]["pool_draws"] == {}
    assert manifest["metrics"]["lambda"] is None and manifest["resolved"]["lambda"] is None   # no term, no λ
    assert "loss_match" not in (out / "curves.csv").read_text()


def test_tampered_input_is_refused_naming_the_file(chain, tmp_path, capsys):
    copy = tmp_path / "gan"
    subprocess.run(["cp", "-r", str(chain["gan"]), str(copy)], check=True)
    weights = copy / "generator.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    code = main(["sample", "--gan", str(copy), "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and str(weights) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "skdd.cli", *args], capture_output=True, text=True)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_inputs_give_one_line_errors(tmp_path):
    missing = tmp_path / "nope"
    assert_one_line_error(run_cli("ingest", "--out", str(tmp_path / "o"), "--set", "source=idx",
                                  "--set", f"location={missing}"), str(missing))
    assert_one_line_error(run_cli("pretrain", "--dataset", str(missing), "--out", str(tmp_path / "o")),
                          "input artifact not found")
    assert_one_line_error(run_cli("ingest", "--out", str(tmp_path / "o"), "--set", "source=torchvision",
                                  "--set", "name=imagenet-22k", "--set", f"location={tmp_path}"), "imagenet-22k")
    assert_one_line_error(run_cli("distill", "--dataset", str(missing), "--gan", str(missing),
                                  "--out", str(tmp_path / "o"), "--set", "pool=[convnet3, lenet5]"), "lenet5")
    assert_one_line_error(run_cli("pretrain", "--dataset", str(missing), "--out", str(tmp_path / "o"),
                                  "--set", "steps=-1"), "pretrain.steps")
    assert not (tmp_path / "o").exists()


def test_bad_dataset_contents(tmp_path):
    bad = tmp_path / "bad.npz"
    x = np.zeros((20, 28, 28), np.uint8)
    names = np.array([str(i) for i in range(10)])
    np.savez(bad, x_train=x, y_train=np.r_[np.arange(10), np.arange(9), 12], x_test=x, y_test=np.arange(20) % 10,
             classes=names)
    with pytest.raises(SkddError, match="12"):
        run_stage("ingest", output=str(tmp_path / "o"), inputs={}, overrides=["source=npz", f"location={bad}"])
    np.savez(bad, x_train=x, y_train=np.arange(20) % 9, x_test=x, y_test=np.arange(20) % 9,
             classes=np.array([str(i) for i in range(10)]))
    with pytest.raises(SkddError, match="9"):        # class '9' has no images
        run_stage("ingest", output=str(tmp_path / "o"), inputs={}, overrides=["source=npz", f"location={bad}"])
    assert not (tmp_path / "o").exists()


def test_corrupt_parquet_shard_is_refused(tmp_path):
    data = ingest_tiny(tmp_path)
    shard = next((data / "train").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(SkddError, match=str(shard)):
        run_stage("pretrain", output=str(tmp_path / "g"), inputs={"dataset": str(data)}, overrides=TINY_PRETRAIN)


def test_shape_mismatch_between_gan_and_dataset(tmp_path):
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    data_rgb = ingest_tiny(rgb, size=32, channels=3)
    gan = tmp_path / "gan"
    run_stage("pretrain", output=str(gan), inputs={"dataset": str(data_rgb)}, overrides=TINY_PRETRAIN + ["steps=1"])
    gray = tmp_path / "gray"
    gray.mkdir()
    data_gray = ingest_tiny(gray)
    with pytest.raises(SkddError, match="GAN was trained for 3x32x32"):
        run_stage("distill", output=str(tmp_path / "d"), inputs={"dataset": str(data_gray), "gan": str(gan)},
                  overrides=TINY_DISTILL + ["steps=1"])


def test_npz_ingest_counts(tmp_path):
    manifest = json.loads((ingest_tiny(tmp_path) / "manifest.json").read_text())
    assert manifest["dataset"]["counts"] == {"train": 100, "val": 20, "test": 40}   # 2 per class held out
    assert manifest["dataset"]["shape"] == [1, 28, 28]
