"""Params are validated at the edge: each mistake is one line naming the key."""

import pytest

from skdd.config import load_stage_params, parse_overrides, params_hash
from skdd.errors import SkddError
from skdd.stages.distill import DistillParams
from skdd.stages.pretrain import PretrainParams


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_defaults_and_file_values(tmp_path):
    p = load_stage_params(PretrainParams, "pretrain", write(tmp_path, "pretrain:\n  steps: 7\n  lr: 1\n"))
    assert p.steps == 7 and p.lr == 1.0 and isinstance(p.lr, float) and p.batch_size == 128


def test_exponent_without_dot_is_a_number(tmp_path):
    p = load_stage_params(PretrainParams, "pretrain", write(tmp_path, "pretrain:\n  lr: 2e-4\n"), ["gp_weight=1e1"])
    assert p.lr == 2e-4 and p.gp_weight == 10.0


def test_overrides_win_over_file(tmp_path):
    p = load_stage_params(PretrainParams, "pretrain", write(tmp_path, "pretrain:\n  steps: 7\n"), ["steps=9"])
    assert p.steps == 9


@pytest.mark.parametrize("text, fragment", [
    ("pretrain:\n  stpes: 3\n", "pretrain.stpes: unknown key"),
    ("pretrain:\n  steps: three\n", "pretrain.steps: expected an integer"),
    ("pretrain:\n  steps: 2.5\n", "pretrain.steps: expected an integer"),
    ("pretrain:\n  steps: 0\n", "pretrain.steps: must be >= 1"),
    ("pretrain:\n  lr: -1\n", "pretrain.lr: must be > 0"),
    ("pretrain:\n  conditioning: sideways\n", "pretrain.conditioning: 'sideways' is not one of overwrite, concat"),
    ("pretrain:\n  amp: 1\n", "pretrain.amp: expected true or false"),
    ("pretrain: [1, 2]\n", "section 'pretrain' must be a mapping"),
    ("pretrain:\n  steps: [\n", "not valid YAML"),
])
def test_bad_params_name_the_key(tmp_path, text, fragment):
    with pytest.raises(SkddError) as err:
        load_stage_params(PretrainParams, "pretrain", write(tmp_path, text))
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_distill_pool_and_augment_are_checked(tmp_path):
    with pytest.raises(SkddError, match=r"distill.pool: unknown model 'lenet'"):
        load_stage_params(DistillParams, "distill", None, ["pool=[convnet3, lenet]"])
    with pytest.raises(SkddError, match=r"distill.match_augment"):
        load_stage_params(DistillParams, "distill", None, ["match_augment=color_warp"])
    with pytest.raises(SkddError, match=r"distill.loss"):
        load_stage_params(DistillParams, "distill", None, ["loss=mse"])
    p = load_stage_params(DistillParams, "distill", None, ["lambda_skd=0.1", "pool_width=null"])
    assert p.lambda_skd == 0.1 and p.pool_width is None


def test_missing_file_and_bad_override():
    with pytest.raises(SkddError, match="params file not found"):
        load_stage_params(PretrainParams, "pretrain", "/nonexistent/params.yaml")
    with pytest.raises(SkddError, match="expected key=value"):
        parse_overrides(["steps"])


def test_params_hash_tracks_values():
    a = load_stage_params(PretrainParams, "pretrain", None, ["steps=5"])
    b = load_stage_params(PretrainParams, "pretrain", None, ["steps=5"])
    c = load_stage_params(PretrainParams, "pretrain", None, ["steps=6"])
    assert params_hash(a) == params_hash(b) != params_hash(c)


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
PROFILES = sorted([ROOT / "params.yaml", *(ROOT / "params").glob("*.yaml")])


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_every_profile_validates_for_every_stage(profile):
    from skdd.config import read_params_file
    from skdd.stages.registry import STAGES
    sections = read_params_file(profile)
    for stage, spec in STAGES.items():
        assert stage in sections, f"{profile.name} has no '{stage}' section"
        load_stage_params(spec.params_class(), stage, profile)


@pytest.mark.parametrize("raw", [".nan", ".inf", "-.inf", ".NaN"])
def test_non_finite_floats_are_refused_naming_the_key(tmp_path, raw):
    from skdd.errors import SkddError
    from skdd.stages.pretrain import PretrainParams

    path = tmp_path / "p.yaml"
    path.write_text(f"pretrain:\n  lr: {raw}\n")
    with pytest.raises(SkddError, match=r"pretrain\.lr: must be a finite number"):
        load_stage_params(PretrainParams, "pretrain", path)
    with pytest.raises(SkddError, match=r"pretrain\.gp_weight: must be a finite number"):
        load_stage_params(PretrainParams, "pretrain", None, [f"gp_weight={raw}"])


def test_cifar10_cpu_profile_is_the_default_profile_on_cifar10():
    """params/cifar10-cpu.yaml promises the default profile with only the dataset changed: a default that moves
    without it (or an edit to it alone) fails here, not in a CIFAR-10 figure that silently measured other settings."""
    import yaml

    default = yaml.safe_load((ROOT / "params.yaml").read_text())
    cifar = yaml.safe_load((ROOT / "params" / "cifar10-cpu.yaml").read_text())
    assert cifar["ingest"].pop("name") == "cifar10" and default["ingest"].pop("name") == "mnist"
    assert cifar == default
