"""Unit tests of the fixed-set pieces on hand-made tensors: coverage and confidence selection of generated
candidates, and the distribution-matching loss and refinement (expected values computed by hand)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from skdd.augment import DiffAug
from skdd.data.batches import Pixels
from skdd.data.dataset import ImageDataset
from skdd.errors import SkddError
from skdd.evaluation.selection import (confidence_survivors, coverage, kmeans, nearest_distinct,
                                       select_candidates)
from skdd.matching import class_means, dm_loss, per_class_aug, spatial_attention


def three_clusters() -> tuple[torch.Tensor, set[int]]:
    """Three separated plus-shaped clusters; each has one point exactly at its mean (the expected picks)."""
    pts, centres = [], set()
    for cx, cy in ((0.0, 0.0), (10.0, 0.0), (0.0, 10.0)):
        for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1), (0, 0)):
            if (dx, dy) == (0, 0):
                centres.add(len(pts))
            pts.append((cx + dx, cy + dy))
    return torch.tensor(pts), centres


def test_coverage_picks_the_points_nearest_the_cluster_centres():
    feats, centres = three_clusters()
    picked = coverage(feats, 3)
    assert set(picked.tolist()) == centres
    assert torch.equal(picked, coverage(feats, 3))        # deterministic


def test_coverage_ipc_one_is_the_point_nearest_the_mean():
    feats = torch.tensor([[0.0, 0.0], [4.0, 0.0], [1.9, 0.1], [0.0, 4.0]])   # mean (1.475, 1.025)
    assert coverage(feats, 1).tolist() == [2]


def test_kmeans_reseeds_empty_clusters_and_picks_stay_distinct():
    feats = torch.tensor([[1.0, 1.0]] * 4 + [[5.0, 5.0]])   # duplicates make the greedy start repeat a point
    centres = kmeans(feats, 3)
    assert centres.shape == (3, 2) and torch.isfinite(centres).all()
    picked = nearest_distinct(feats, centres)
    assert len(set(picked.tolist())) == 3


def test_kmeans_refuses_more_centres_than_points():
    with pytest.raises(SkddError, match="cannot pick 4 of 3"):
        kmeans(torch.zeros(3, 2), 4)


def test_confidence_drops_exactly_the_planted_low_candidates():
    probs = torch.tensor([0.95, 0.1, 0.9, 0.05, 0.99, 0.12, 0.97, 0.08, 0.93, 0.11])
    planted_low = {1, 3, 5, 7, 9}
    keep = confidence_survivors(probs, 0.5, keep_at_least=2)
    assert set(keep.tolist()) == set(range(10)) - planted_low
    # too few survivors (everything tied): the most confident keep_at_least instead
    assert confidence_survivors(torch.full((5,), 0.5), 0.9, keep_at_least=3).numel() >= 3
    assert confidence_survivors(torch.tensor([0.2, 0.9, 0.1]), 0.99, keep_at_least=2).tolist() == [0, 1]


def test_select_candidates_per_class_and_modes():
    feats, centres = three_clusters()
    # class 0: the 15 cluster points; class 1: the same points again (indices 15..29)
    features = torch.cat([feats, feats])
    labels = torch.tensor([0] * 15 + [1] * 15)
    own = torch.ones(30)
    own[[c + 15 for c in centres]] = 0.01      # class 1's centre points are low-confidence
    cov = select_candidates("coverage", features, own, labels, 3)
    assert set(cov[:3].tolist()) == centres and set(cov[3:].tolist()) == {c + 15 for c in centres}
    both = select_candidates("confidence+coverage", features, own, labels, 3, quantile=0.3)
    assert set(both[:3].tolist()) == centres
    assert not set(both[3:].tolist()) & {c + 15 for c in centres}    # the planted ones are gone
    assert select_candidates("none", None, None, labels, 2).tolist() == [0, 1, 15, 16]
    conf = select_candidates("confidence", features, own, labels, 3, quantile=0.3)
    assert conf[:3].tolist() == [0, 1, 2] and not set(conf[3:].tolist()) & {c + 15 for c in centres}
    with pytest.raises(SkddError, match="unknown mode"):
        select_candidates("best", features, own, labels, 3)


def test_dm_loss_hand_computed():
    flat = nn.Flatten()
    real = torch.tensor([[1.0, 1.0], [3.0, 3.0], [0.0, 2.0]]).view(3, 2, 1, 1)
    real_y = torch.tensor([0, 0, 1])
    syn = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).view(2, 2, 1, 1).requires_grad_(True)
    syn_y = torch.tensor([0, 1])
    # class 0: real mean (2, 2), syn (0, 0) -> 8; class 1: real (0, 2), syn (1, 1) -> 2
    loss = dm_loss(flat, real, real_y, syn, syn_y, 2)
    assert loss.item() == pytest.approx(10.0)
    loss.backward()
    assert syn.grad.view(2, 2).tolist() == [[-4.0, -4.0], [2.0, -2.0]]    # d/ds ||mu_r - s||^2 = -2 (mu_r - s)


def test_relative_dm_loss_is_hand_computed_and_blind_to_the_embedding_scale():
    """loss_scale relative: the same sums over ||real class means||^2 = ||(2, 2)||^2 + ||(0, 2)||^2 = 12, so a
    network whose features are 1000x larger (VGG11 against ConvNet3 at init) pulls with the same weight."""
    real = torch.tensor([[1.0, 1.0], [3.0, 3.0], [0.0, 2.0]]).view(3, 2, 1, 1)
    real_y, syn_y = torch.tensor([0, 0, 1]), torch.tensor([0, 1])
    syn = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).view(2, 2, 1, 1)
    flat = nn.Flatten()
    assert dm_loss(flat, real, real_y, syn, syn_y, 2, relative=True).item() == pytest.approx(10.0 / 12.0)

    class Scaled(nn.Module):
        def forward(self, x):
            return 1000.0 * x.flatten(1)

    assert dm_loss(Scaled(), real, real_y, syn, syn_y, 2).item() == pytest.approx(1e7)
    assert dm_loss(Scaled(), real, real_y, syn, syn_y, 2, relative=True).item() == pytest.approx(10.0 / 12.0)


def test_attention_matching_is_hand_computed_and_leaves_no_hooks():
    """One class, 1x1x2 images through a ReLU block. DM: real mean (0.5, 0.5) against syn (2, 0) -> 2.25 + 0.25.
    Attention (|f|^4 over the one channel, L2-normalised): real maps (1, 0) and (0, 1) average (0.5, 0.5), the syn
    map (16, 0) normalises to (1, 0) -> 0.25 + 0.25 = 0.5; at weight 2 the loss is 2.5 + 2 x 0.5."""
    blocks = nn.Sequential(nn.ReLU(), nn.Flatten())
    real = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 1, 1, 2)
    syn = torch.tensor([[2.0, 0.0]]).view(1, 1, 1, 2)
    y_real, y_syn = torch.tensor([0, 0]), torch.tensor([0])
    assert dm_loss(blocks, real, y_real, syn, y_syn, 1).item() == pytest.approx(2.5)
    assert dm_loss(blocks, real, y_real, syn, y_syn, 1, attention=2.0, blocks=blocks).item() == pytest.approx(3.5)
    norm = (2.0**2 + 16.0**2) ** 0.5       # two channels: positions sum 1^4 + 1^4 = 2 and 2^4 + 0 = 16
    assert spatial_attention(torch.tensor([[[[1.0, 2.0]], [[1.0, 0.0]]]])).flatten().tolist() == pytest.approx(
        [2 / norm, 16 / norm])
    assert not any(m._forward_hooks for m in blocks.modules())
    with pytest.raises(SkddError, match="needs the embedding network's blocks"):
        dm_loss(blocks, real, y_real, syn, y_syn, 1, attention=1.0)
    with pytest.raises(SkddError, match="Flatten has none"):
        dm_loss(nn.Flatten(), real, y_real, syn, y_syn, 1, attention=1.0, blocks=nn.Flatten())


def test_class_means_and_per_class_augmentation_are_siamese_within_a_class():
    emb = torch.tensor([[1.0], [3.0], [10.0]])
    assert class_means(emb, torch.tensor([0, 0, 1]), 2).flatten().tolist() == [2.0, 10.0]
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 0, 1, 1])
    params = per_class_aug(DiffAug("color", "dsa"), labels, 2, "cpu")
    for key, value in params.values.items():
        assert torch.equal(value[0], value[2]) and torch.equal(value[1], value[3]) and torch.equal(value[1], value[4])


class ToyGenerator(nn.Module):
    """z (16-d) -> a 1x28x28 image in [-1, 1]; labels ignored (the codes carry everything)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(16, 28 * 28)

    def forward(self, z, y):
        return torch.tanh(self.fc(z)).view(-1, 1, 28, 28)


def _fixed_dm(refiner, nets) -> float:
    """The DM loss under a fixed set of random embedding networks of the refiner's kind (no augmentation)."""
    real = refiner.pixels.normalize(refiner.real.images.float() / 255.0)
    with torch.no_grad():
        return sum(float(dm_loss(n, real, refiner.real.labels, refiner.images(), refiner.labels, 2)) for n in nets)


def _toy_real() -> ImageDataset:
    """Two classes that differ in shape: a bright top half, or a bright left half."""
    images = torch.full((12, 1, 28, 28), 30, dtype=torch.uint8)
    images[:6, :, :14, :] = 220
    images[6:, :, :, :14] = 220
    images += torch.randint(0, 20, images.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return ImageDataset(images=images, labels=torch.tensor([0] * 6 + [1] * 6), classes=["top", "left"])


@pytest.mark.parametrize("space", ["latent", "pixel"])
def test_refine_lowers_the_dm_loss_and_keeps_labels(space):
    from skdd.stages.refine import RefineParams, Refiner

    from skdd.models import create_model

    torch.manual_seed(0)
    real = _toy_real()
    labels = torch.tensor([0, 0, 1, 1])
    pixels = Pixels([0.5], [0.25])
    g = ToyGenerator().requires_grad_(False) if space == "latent" else None
    init = torch.randn(4, 16) if space == "latent" else torch.rand(4, 1, 28, 28)
    params = RefineParams(space=space, steps=40, real_per_class=4, embed_width=4, augment="none",
                          lr=0.1)
    refiner = Refiner(params, real, init, labels, pixels, torch.device("cpu"), g, "none")
    torch.manual_seed(123)
    nets = [create_model("convnet3", in_channels=1, num_classes=2, image_size=28, width=4).embed for _ in range(6)]
    before = _fixed_dm(refiner, nets)
    for _ in range(40):
        refiner.step()
    after = _fixed_dm(refiner, nets)
    assert after < 0.8 * before        # measured: latent about 0.7x, pixel lower
    out = refiner.images_u8()
    assert out.dtype == torch.uint8 and out.shape == (4, 1, 28, 28)
    assert torch.equal(refiner.labels, labels)


def test_refine_attention_weight_reaches_the_loss_and_lowers_the_attention_term():
    """`refine.attention` is the weight of the term the refiner descends: the first step's logged loss grows
    linearly in it from the same start and draws, and after 40 steps at weight 3 the attention part under fixed
    random ConvNet3s (the loss at attention 1 minus DM's) ends lower than DM alone leaves it (measured 24.5 vs
    30.2 from 39.8)."""
    from skdd.stages.refine import RefineParams, Refiner

    from skdd.models import create_model

    real, labels, pixels = _toy_real(), torch.tensor([0, 0, 1, 1]), Pixels([0.5], [0.25])
    x_real = pixels.normalize(real.images.float() / 255.0)
    torch.manual_seed(123)
    nets = [create_model("convnet3", in_channels=1, num_classes=2, image_size=28, width=4) for _ in range(6)]

    def attention_part(refiner) -> float:
        with torch.no_grad():
            return sum(float(dm_loss(n.embed, x_real, real.labels, refiner.images(), labels, 2, attention=1.0, blocks=n)
                             - dm_loss(n.embed, x_real, real.labels, refiner.images(), labels, 2)) for n in nets)

    first, ends = {}, {}
    for weight in (0.0, 1.0, 3.0):
        params = RefineParams(space="pixel", steps=40, real_per_class=4, embed_width=4, augment="none", lr=0.1,
                              attention=weight)
        torch.manual_seed(0)
        refiner = Refiner(params, real, torch.rand(4, 1, 28, 28), labels, pixels, torch.device("cpu"), None, "none")
        first[weight] = refiner.step()["loss_dm"]
        for _ in range(39):
            refiner.step()
        ends[weight] = attention_part(refiner)
    assert first[1.0] > first[0.0]
    assert first[3.0] - first[0.0] == pytest.approx(3 * (first[1.0] - first[0.0]), rel=1e-4)
    assert ends[3.0] < 0.9 * ends[0.0]


def test_refine_with_an_architecture_list_draws_each_reproducibly_and_still_lowers_the_loss():
    """A list of embedding architectures: each step draws one from the (checkpointed) RNG, so every listed
    architecture is used, the same seed gives the same sequence, and the DM loss under either still falls."""
    from skdd.stages.refine import RefineParams, Refiner

    from skdd.models import create_model

    real, labels, pixels = _toy_real(), torch.tensor([0, 0, 1, 1]), Pixels([0.5], [0.25])
    params = RefineParams(space="pixel", steps=30, real_per_class=4, embed_width=4, augment="none", lr=0.1,
                          embed_arch=["convnet3", "alexnet"])

    def run():
        torch.manual_seed(0)
        refiner = Refiner(params, real, torch.rand(4, 1, 28, 28), labels, pixels, torch.device("cpu"), None, "none")
        drawn = []
        for _ in range(30):
            state = torch.get_rng_state()
            drawn.append(refiner.embed_arch())
            torch.set_rng_state(state)       # step() draws again from the same state
            refiner.step()
        return refiner, drawn

    refiner, drawn = run()
    assert set(drawn) == {"convnet3", "alexnet"}
    assert run()[1] == drawn
    torch.manual_seed(123)
    nets = [create_model(a, in_channels=1, num_classes=2, image_size=28, width=4).embed
            for a in ("convnet3", "alexnet") for _ in range(3)]
    fresh = Refiner(params, real, torch.rand(4, 1, 28, 28), labels, pixels, torch.device("cpu"), None, "none")
    assert _fixed_dm(refiner, nets) < 0.8 * _fixed_dm(fresh, nets)


def test_refine_embed_arch_one_name_draws_nothing():
    """One name keeps the random stream of every set refined before lists existed."""
    from skdd.stages.refine import RefineParams, Refiner

    refiner = Refiner(RefineParams(space="pixel"), _toy_real(), torch.rand(4, 1, 28, 28), torch.tensor([0, 0, 1, 1]),
                      Pixels([0.5], [0.25]), torch.device("cpu"), None, "none")
    state = torch.get_rng_state()
    assert refiner.embed_arch() == "convnet3" and torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("value, message", [
    (["convnet3", "resnet50"], "refine.embed_arch[1]: unknown architecture 'resnet50'"),
    ([], "refine.embed_arch: name at least one architecture"),
    ("dcgan", "refine.embed_arch: unknown architecture 'dcgan'"),
    ([3], "refine.embed_arch"),
])
def test_refine_embed_arch_bad_values_fail_in_one_line(value, message):
    from skdd.config import from_dict
    from skdd.errors import SkddError
    from skdd.stages.refine import RefineParams

    with pytest.raises(SkddError) as err:
        from_dict(RefineParams, {"embed_arch": value}, "refine")
    assert message in str(err.value) and "\n" not in str(err.value)
