"""The one list of stages: what each is called, where its code and params live, and what it reads.

The CLI builds its subcommands from it, `run_stage` (here: the one entry point the CLI, DVC, the Kubeflow
components and the benchmarks all call) checks inputs against it, and the Kubeflow layer and the benchmarks look
params classes up in it; adding a stage means one entry here (plus its module, its params section, `dvc.yaml`
and, with `component=True`, its Kubeflow component). Modules are imported lazily, so `skdd lineage` stays light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from skdd.errors import SkddError


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str
    params: str                       # name of the params dataclass in `module`
    inputs: tuple[str, ...] = ()      # required input artifacts (`--<name>` on the CLI)
    optional: tuple[str, ...] = ()    # inputs some params need (the stage says which, in one line, when missing)
    gpu: bool = False                 # may use a GPU (the Kubeflow pipeline requests one by default)
    component: bool = True            # has a Kubeflow component, `components/<name>.py` (export: CLI only)
    help: str = ""

    def load(self) -> tuple[type, Callable]:
        """(params dataclass, `run(params, inputs, output)`), importing the stage's module."""
        module = importlib.import_module(self.module)
        return getattr(module, self.params), module.run

    def params_class(self) -> type:
        return self.load()[0]


STAGES: dict[str, StageSpec] = {s.name: s for s in (
    StageSpec("ingest", "skdd.stages.ingest", "IngestParams", help="read a dataset source into Parquet shards"),
    StageSpec("teacher", "skdd.stages.teacher", "TeacherParams", ("dataset",), gpu=True,
              help="train the classifier that selection and baselines use (real training split only)"),
    StageSpec("pretrain", "skdd.stages.pretrain", "PretrainParams", ("dataset",), ("teacher",), gpu=True,
              help="pre-train the conditional GAN"),
    StageSpec("pool", "skdd.stages.pool", "PoolParams", ("dataset",), gpu=True,
              help="record the pool's training trajectories (snapshots) for distill's pool_source trajectories"),
    StageSpec("distill", "skdd.stages.distill", "DistillParams", ("dataset", "gan"), ("teacher", "pool"), gpu=True,
              help="fine-tune the generator with the SKD matching term"),
    StageSpec("sample", "skdd.stages.sample", "SampleParams", ("gan",), ("teacher",),
              help="a fixed synthetic set: over-generate, keep IPC per class by the teacher"),
    StageSpec("refine", "skdd.stages.refine", "RefineParams", ("dataset", "synthetic"), ("gan",), gpu=True,
              help="distribution-match a fixed set (its latents through the generator, or its pixels)"),
    StageSpec("select", "skdd.stages.select", "SelectParams", ("dataset",), ("teacher",),
              help="a baseline subset of the real data (random, herding, k-center)"),
    StageSpec("evaluate", "skdd.stages.evaluate", "EvaluateParams", ("dataset", "synthetic"), gpu=True,
              help="train fresh networks on a set and test them"),
    StageSpec("report", "skdd.stages.report", "ReportParams", help="one comparison table of evaluations"),
    StageSpec("export", "skdd.stages.export", "ExportParams", ("synthetic",), component=False,
              help="a set as PNG folders and tensors for other tools"),
)}


def run_stage(stage: str, *, output: str, inputs: dict[str, str], params_file: str | None = None,
              overrides: list[str] | None = None, section: str | None = None) -> dict:
    """The one entry point for a stage: load and validate params, check inputs, run; returns the manifest."""
    from skdd import telemetry   # here, not at the top: `skdd lineage` does not need prometheus_client
    from skdd.config import load_stage_params

    spec = STAGES[stage]
    params_cls, run = spec.load()
    missing = [name for name in spec.inputs if not inputs.get(name)]
    if missing:
        raise SkddError(f"{stage}: missing input --{missing[0]}")
    with telemetry.stage_metrics(stage, output):   # every stage: duration and status, pushed or a textfile
        params = load_stage_params(params_cls, section or stage, params_file, overrides)
        return run(params, inputs, output)
