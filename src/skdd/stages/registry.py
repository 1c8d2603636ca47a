"""The one list of stages: what each is called, where its code and params live, and what it reads.

The CLI builds its subcommands from it, `run_stage` checks inputs against it, and the Kubeflow layer and the
benchmarks look params classes up in it; adding a stage means one entry here (plus its module, its params
section, `dvc.yaml` and its component). Modules are imported lazily, so `skdd lineage` stays light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str
    params: str                       # name of the params dataclass in `module`
    inputs: tuple[str, ...] = ()      # required input artifacts (`--<name>` on the CLI)
    optional: tuple[str, ...] = ()    # inputs some params need (the stage says which, in one line, when missing)
    gpu: bool = False                 # may use a GPU (the Kubeflow pipeline requests one by default)
    help: str = ""

    def load(self) -> tuple[type, Callable]:
        module = importlib.import_module(self.module)
        return getattr(module, self.params), module.run


STAGES: dict[str, StageSpec] = {s.name: s for s in (
    StageSpec("ingest", "skdd.stages.ingest", "IngestParams", help="read a dataset source into Parquet shards"),
    StageSpec("teacher", "skdd.stages.teacher", "TeacherParams", ("dataset",), gpu=True,
              help="train the classifier that selection and baselines use (real training split only)"),
    StageSpec("pretrain", "skdd.stages.pretrain", "PretrainParams", ("dataset",), gpu=True,
              help="pre-train the conditional GAN"),
    StageSpec("distill", "skdd.stages.distill", "DistillParams", ("dataset", "gan"), gpu=True,
              help="fine-tune the generator with the SKD matching term"),
    StageSpec("sample", "skdd.stages.sample", "SampleParams", ("gan",), ("teacher",),
              help="a fixed synthetic set: over-generate, keep IPC per class by the teacher"),
    StageSpec("refine", "skdd.stages.refine", "RefineParams", ("dataset", "synthetic"), ("gan",), gpu=True,
              help="distribution-match a fixed set (its latents through the generator, or its pixels)"),
    StageSpec("select", "skdd.stages.subset", "SelectParams", ("dataset",), ("teacher",),
              help="a baseline subset of the real data (random, herding, k-center)"),
    StageSpec("evaluate", "skdd.stages.evaluate", "EvaluateParams", ("dataset", "synthetic"), gpu=True,
              help="train fresh networks on a set and test them"),
    StageSpec("report", "skdd.stages.report", "ReportParams", help="one comparison table of evaluations"),
    StageSpec("export", "skdd.stages.export", "ExportParams", ("synthetic",),
              help="a set as PNG folders and tensors for other tools"),
)}
