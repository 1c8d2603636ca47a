"""A quality probe of the generator while it trains, that never reads the test split.

Every `probe_every` steps (and at the last), pretrain and distill measure the weights `sample` would draw from
(the EMA when one is kept) against the validation split ingest holds out of the training data:

* `probe_cas`: classification accuracy score (Ravuri & Vinyals 2019): a small classifier trained from scratch
  for `probe_steps` SGD steps on `probe_per_class` fresh generated images per class, then tested on the
  validation images. It asks what a fixed set is for: does training on generated images teach the classes?
* `probe_fd`: the Fréchet distance between the teacher's penultimate features of the validation images and of the
  same generated images (FID's formula, with a classifier trained on the dataset in place of Inception, which
  has never seen a digit). It needs the `teacher` input; without one the probe logs CAS alone and says so.

With `probe_select`, the probe also keeps a copy of the probed weights with the best CAS (in the checkpoints too,
so a resumed run selects as an uninterrupted one) and the stage publishes those instead of the last step's: a
checkpoint chosen on the validation split, never the test split. Off by default.

The probe runs under its own random state (seeded by the stage's seed and the step), so switching it on changes
no training step, a resumed run probes exactly as an uninterrupted one, and two probes differ only by the
generator. Its cost is measured and logged (`probe_seconds`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skdd.config import param
from skdd.data.batches import Pixels
from skdd.data.dataset import ImageDataset
from skdd.errors import SkddError
from skdd.gan_artifact import GanSpec, noise
from skdd.models import create_model


@dataclass
class ProbeParams:
    """The probe's params: a base of pretrain's and distill's params classes, so both stages take the same keys."""

    probe_every: int = param(0, ge=0, help="every N steps and at the last, log the generator's CAS (and, with "
                                           "--teacher, FD) on the validation split (skdd.probe); 0: off")
    probe_per_class: int = param(50, ge=2, help="probe: images generated per class")
    probe_steps: int = param(200, ge=1, help="probe: SGD steps of the CAS classifier (ConvNet3 width 16)")
    probe_select: bool = param(False, help="publish the sampling weights (EMA, else G) of the probe step with the "
                                          "best CAS on the validation split instead of the last step's; D and the "
                                          "optimizer states stay the last step's")

    def check_probe(self, section: str) -> None:
        if self.probe_select and not self.probe_every:
            raise SkddError(f"{section}.probe_select: needs the probe (probe_every > 0)")


def _own_rng(device: torch.device):
    """A random state of the probe's own: training's stream (CPU, and CUDA when used) is restored on exit."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def frechet_distance(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2(Σ1Σ2)^½), in float64. tr((Σ1Σ2)^½) is taken as the sum of the square roots
    of the eigenvalues of Σ1^½ Σ2 Σ1^½ (symmetric, so `eigvalsh` applies and no complex sqrtm is needed)."""
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    evals, evecs = torch.linalg.eigh(cov1)
    root1 = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * cross)


def feature_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (unbiased) covariance of [N, D] features, float64."""
    f = features.double()
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


class GeneratorProbe:
    """CAS and FD of a generator on the validation split; one instance per stage run."""

    def __init__(self, spec: GanSpec, val: ImageDataset | None, teacher, device: torch.device, *, per_class: int,
                 steps: int, seed: int, width: int = 16, batch_size: int = 64, lr: float = 0.01,
                 select: bool = False):
        if val is None or len(val) == 0:
            raise SkddError("probe: the dataset has no validation split (ingest val_per_class: 0); "
                            "set probe_every: 0 or re-ingest with a validation split")
        self.spec, self.device, self.per_class, self.steps, self.seed = spec, device, per_class, steps, seed
        self.width, self.batch_size, self.lr = width, batch_size, lr
        self.select = select
        self.best: dict | None = None   # with `select`: {"step", "cas", "state"} of the best probed weights
        self.teacher = teacher
        self.pixels = Pixels(spec.mean, spec.std, device)
        self.val_x = self.pixels.classifier(val.images.to(device))
        self.val_y = val.labels.to(device)
        self.real_stats = None if teacher is None else feature_stats(teacher.features_and_probs(val.images)[0])

    @torch.no_grad()
    def _generate(self, g: nn.Module) -> tuple[Tensor, Tensor]:
        was_training = g.training
        g.eval()   # BatchNorm's running statistics, as `sample` draws
        try:
            y = torch.arange(self.spec.num_classes, device=self.device).repeat_interleave(self.per_class)
            images = [Pixels.gan_to_u8(g(noise(len(y[s:s + 500]), self.spec.z_dim, self.device), y[s:s + 500]))
                      for s in range(0, len(y), 500)]
            return torch.cat(images), y
        finally:
            g.train(was_training)

    def _cas(self, images_u8: Tensor, labels: Tensor) -> float:
        model = create_model("convnet3", in_channels=self.spec.in_channels, num_classes=self.spec.num_classes,
                             image_size=self.spec.image_size, width=self.width).to(self.device)
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
        x = self.pixels.classifier(images_u8)
        for _ in range(self.steps):
            idx = torch.randint(len(x), (min(self.batch_size, len(x)),), device=self.device)
            loss = F.cross_entropy(model(x[idx]), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = sum(int((model(self.val_x[s:s + 1000]).argmax(1) == self.val_y[s:s + 1000]).sum())
                          for s in range(0, len(self.val_x), 1000))
        return 100.0 * correct / len(self.val_x)

    def __call__(self, g: nn.Module, step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        with _own_rng(self.device):
            torch.manual_seed(self.seed * 1_000_003 + step)
            images, labels = self._generate(g)
            fd = {}
            if self.teacher is not None:
                fake_stats = feature_stats(self.teacher.features_and_probs(images)[0])
                fd = {"probe_fd": frechet_distance(*self.real_stats, *fake_stats)}
            with torch.enable_grad():
                cas = self._cas(images, labels)
        if self.select and (self.best is None or cas > self.best["cas"]):
            self.best = {"step": step, "cas": cas,
                         "state": {k: v.detach().cpu().clone() for k, v in g.state_dict().items()}}
        return {"probe_cas": cas, **fd, "probe_seconds": time.perf_counter() - t0}

    def state_tensors(self) -> dict[str, Tensor]:
        """The kept best weights for a checkpoint (empty without `select` or before the first probe)."""
        if self.best is None:
            return {}
        return {"probe_best.step": torch.tensor(self.best["step"]), "probe_best.cas": torch.tensor(self.best["cas"]),
                **{f"probe_best.state.{k}": v for k, v in self.best["state"].items()}}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        if "probe_best.step" in tensors:
            prefix = "probe_best.state."
            self.best = {"step": int(tensors["probe_best.step"]), "cas": float(tensors["probe_best.cas"]),
                         "state": {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}}

    def publish_best(self, g: nn.Module) -> int | None:
        """With `select`: load the best probed weights into `g` (the sampling module) and return their step."""
        if not self.select or self.best is None:
            return None
        g.load_state_dict(self.best["state"])
        return self.best["step"]


def build_probe(stage: str, params, inputs: dict[str, str], data, spec: GanSpec, device: torch.device):
    """The stage's probe and the teacher's lineage record (None without a teacher input: CAS alone, said in one
    line), or (None, None) when `probe_every` is 0."""
    if params.probe_every == 0:
        return None, None
    teacher = record = None
    if inputs.get("teacher"):
        from skdd import lineage
        from skdd.stages.teacher import check_teacher_fits, load_teacher

        with _own_rng(device):
            teacher = load_teacher(inputs["teacher"], device)   # building it draws init weights: not training's RNG
        check_teacher_fits(teacher, (spec.in_channels, spec.image_size, spec.image_size), spec.num_classes,
                           f"the {stage} GAN")
        record = lineage.input_record("teacher", inputs["teacher"], teacher.path)
    else:
        print(f"{stage}: probe without a teacher input: CAS only, no Fréchet distance (pass --teacher for it)",
              flush=True)
    probe = GeneratorProbe(spec, data.val, teacher, device, per_class=params.probe_per_class,
                           steps=params.probe_steps, seed=params.seed, select=params.probe_select)
    return probe, record


PROBE_FILE = "probe.csv"
PROBE_COLUMNS = ("step", "probe_cas", "probe_fd", "probe_seconds")


def probe_rows(curves: list[dict]) -> list[dict]:
    """The probed steps alone, for `probe.csv` (what `dvc plots` draws: no empty cells between probes)."""
    return [{k: c[k] for k in PROBE_COLUMNS if k in c} for c in curves if "probe_cas" in c]


def probe_metrics(curves: list[dict]) -> dict:
    """The manifest's summary of the probed steps: the last and the best CAS and FD, and the mean cost of one probe
    (empty when the probe was off)."""
    rows = probe_rows(curves)
    if not rows:
        return {}
    best = max(rows, key=lambda c: c["probe_cas"])
    fds = [c["probe_fd"] for c in rows if "probe_fd" in c]
    return {"probe_cas_final": rows[-1]["probe_cas"], "probe_fd_final": fds[-1] if fds else None,
            "probe_cas_best": best["probe_cas"], "probe_cas_best_step": best["step"],
            "probe_fd_best": min(fds) if fds else None,
            "probe_seconds_mean": sum(c["probe_seconds"] for c in rows) / len(rows)}
