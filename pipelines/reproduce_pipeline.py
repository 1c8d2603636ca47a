"""`skdd-reproduce`: a reproduction preset (benchmarks/presets/*.yaml) compiled to one Kubeflow pipeline.

The preset's matrix (`skdd.reproduce.matrix`, the planner `benchmarks/reproduce.py` uses) fans out over the
components of the main pipeline. Per dataset, once: fingerprint → ingest → teacher → pretrain. Then one
`dsl.ParallelFor` per kind of cell source, each iteration one source and every evaluation that hangs under it:

  distilled generators  distill (per loss mode, control and λ-sweep point) → per IPC: sample → evaluate
                        (strict) and evaluate on the generator (DiM protocol)
  the pretrained GAN    the `cgan-only` row: the same evaluations on pretrain's output
  real baselines        select (random, herding, k-center) → evaluate
  the full dataset      evaluate on the training split

Every stage's params are fixed when compiling: each task gets the params text of its node (its stage section,
validated, as the in-process run resolves it), so its content key, and with it the artifact it writes to
`{artifact_root}/{stage}/{key}`, is the one any other run with the same params and inputs computes. Cells that
share a stage share its task or its artifact; a resubmitted run reuses every finished artifact and resumes a
stopped stage from the checkpoints mirrored beside it.

Fan-in: each fan-out group's evaluations reach `collect_evaluations` through `dsl.Collected`, one group after
another (each appends to the records of the groups before it), and `reproduce_results` joins them with the
matrix into the results JSON and the docs/results.md section (`skdd.reproduce.page`), a Markdown artifact the
Kubeflow UI shows. A cell whose chain failed is listed as not run.

Pipeline parameters: `artifact_root`, `s3_endpoint_url`, and per dataset `data_<key>` (its copy's location;
the default is the preset's, as written: give an s3:// prefix on a cluster). GPU requests, node selector,
tolerations, retries, the image and the S3 and signing Secrets are the main pipeline's (`PipelineOptions`).
"""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path
from typing import NamedTuple

import yaml

from pipelines.skdd_pipeline import PipelineOptions, apply_platform

PIPELINE_NAME = "skdd-reproduce"
COMPILED = {name: Path(__file__).with_name(f"reproduce-{name}.yaml") for name in (
    "smoke", "cpu-budget", "gpu-short", "gpu-mnist", "gpu-cifar10")}   # the shipped presets' compiles (make pipelines)
SHIPPED_PRESETS = tuple(COMPILED)


def data_param(key: str) -> str:
    """The pipeline parameter holding a dataset's location: `data_<key>`, as an identifier."""
    return "data_" + re.sub(r"\W", "_", key)


class Matrix(NamedTuple):
    preset: dict
    plan: object          # skdd.reproduce.matrix.Plan
    base: str             # the base params file
    spec: dict            # skdd.reproduce.results.matrix_spec
    locations: dict       # dataset key -> default location (as written; absolute for a local run)


def load_matrix(preset_path: str | Path, root: Path, data: list[str] = (), command: str | None = None,
                local: bool = False) -> Matrix:
    """Plan a preset (relative paths from `root`); `data`: `--data DATASET=[SOURCE:]LOCATION` items overriding
    where a dataset's copy is.

    Compiled for a cluster (`local` False), nothing of this machine goes in: locations as written, and a copy
    missing here is not a reason to leave a dataset out (the cluster reads its own). `local`: a run here."""
    from skdd.reproduce.matrix import Plan, base_file, load_preset, node_params, parse_data, resolve_dataset
    from skdd.reproduce.results import matrix_spec

    preset_path = Path(preset_path)
    preset = load_preset(preset_path)
    data = parse_data(list(data), preset["datasets"])
    datasets = {k: resolve_dataset(k, v, data.get(k), root) for k, v in preset["datasets"].items()}
    if not local:
        for d in datasets.values():
            d.missing = None
    plan = Plan(preset, datasets, root)
    base = str(base_file(preset, root))
    for node in plan.nodes.values():   # every stage's params, before anything is compiled
        node_params(node, base)
    locations = {k: d.location if local else d.written for k, d in datasets.items()}
    shown = _relative(os.path.abspath(preset_path), root)
    command = command or f"skdd pipeline compile --preset {shown}"
    return Matrix(preset, plan, base, matrix_spec(preset, plan, base, command, shown), locations)


def _relative(location: str, root: Path) -> str:
    """A local path relative to `root` (so the compiled YAML does not depend on where the checkout is; no
    symlink is resolved, the copies beside a checkout may be one)."""
    if "://" in location or not Path(location).is_absolute():
        return location
    return os.path.relpath(location, os.path.abspath(root))


def stage_text(node, base: str) -> str:
    """The params file a task gets: its stage's section, validated, exactly as the in-process run resolves it
    (the evaluation label and ingest's location come as task inputs instead)."""
    from skdd.config import as_dict, load_stage_params
    from skdd.stages.registry import STAGES

    params = as_dict(load_stage_params(STAGES[node.stage].params_class(), node.section or node.stage, base,
                                       node.overrides))
    if node.stage == "evaluate":
        params.pop("label", None)
    if node.stage == "ingest":
        params.pop("location", None)
    return yaml.safe_dump({node.stage: params}, sort_keys=True)


def _label(node) -> str:
    from skdd.reproduce.matrix import override

    return override(node.overrides, "label")


def build_reproduce_pipeline(options: PipelineOptions, matrix: Matrix, datasets: list[str] | None = None):
    """The pipeline function for this preset and these compile-time options (call it under kfp.local, or compile).
    `datasets`: the ones to run (default all); the others' cells are reported as not run, with the reason the
    matrix gives (a copy missing on this machine)."""
    from kfp import dsl
    from kfp.dsl import Artifact, Markdown

    from components import make_components

    c = make_components(options.image)
    plan, base = matrix.plan, matrix.base
    chosen = list(plan.datasets) if datasets is None else [d for d in plan.datasets if d in datasets]
    text = {key: stage_text(node, base) for key, node in plan.nodes.items()}
    nodes = plan.nodes
    children: dict[str, list[str]] = {}   # source -> the samples drawn from it and the evaluations of it
    for key, node in nodes.items():
        edge = {"evaluate": "synthetic", "sample": "gan"}.get(node.stage)
        if edge:
            children.setdefault(node.inputs[edge], []).append(key)

    def platform(task, stage: str, cache: bool = True):
        return apply_platform(task, stage, options, cache)

    def tails(source: str) -> list[tuple]:
        """What hangs under a source: (eval key, sample key or None), in a fixed order."""
        out = []
        for child in sorted(children.get(source, [])):
            if nodes[child].stage == "evaluate":
                out.append((child, None))
            elif nodes[child].stage == "sample":
                out += [(e, child) for e in sorted(children.get(child, [])) if nodes[e].stage == "evaluate"]
        return out

    def signature(source: str) -> tuple:
        return tuple((text[s] if s else None, text[e]) for e, s in tails(source))

    def pipeline_body(artifact_root: str, s3_endpoint_url: str, **locations: str):
        common = dict(artifact_root=artifact_root, s3_endpoint_url=s3_endpoint_url)
        state = {"records": None}

        def collect(dataset: str, evaluation_task) -> None:
            kwargs = {} if state["records"] is None else {"previous": state["records"]}
            task = platform(c.collect_evaluations(evaluations=dsl.Collected(evaluation_task.outputs["evaluation"]),
                                                  dataset=dataset, s3_endpoint_url=s3_endpoint_url, **kwargs),
                            "collect", cache=False)
            state["records"] = task.outputs["records"]

        def evaluations(data, teacher, generator, tail, label) -> list:
            """Under one source: per (sample, evaluate) text pair, sample when strict, then evaluate."""
            out = []
            for sample_text, eval_text in tail:
                synthetic = generator
                if sample_text is not None:
                    synthetic = platform(c.sample(generator=generator, teacher=teacher, params_yaml=sample_text,
                                                  ipc=yaml.safe_load(sample_text)["sample"]["ipc"], **common),
                                         "sample").outputs["synthetic"]
                out.append(platform(c.evaluate(dataset=data, synthetic=synthetic, params_yaml=eval_text,
                                               label=label, **common), "evaluate"))
            return out

        for d in chosen:
            ingest_key = f"{d}/dataset"
            location = locations[data_param(d)]
            fp = platform(c.fingerprint_source(params_yaml=text[ingest_key], location=location,
                                               s3_endpoint_url=s3_endpoint_url), "fingerprint", cache=False)
            data = platform(c.ingest(source_fingerprint=fp.output, params_yaml=text[ingest_key], location=location,
                                     **common), "ingest").outputs["dataset"]
            teacher = platform(c.teacher(dataset=data, params_yaml=text[f"{d}/teacher"], **common),
                               "teacher").outputs["classifier"] if f"{d}/teacher" in nodes else None
            gan = platform(c.pretrain(dataset=data, teacher=teacher, params_yaml=text[f"{d}/gan"], **common),
                           "pretrain").outputs["gan"]
            mine = [k for k, n in nodes.items() if n.dataset == d]

            # distilled generators, grouped by what hangs under them (one loop per shape)
            groups: dict[tuple, list[dict]] = {}
            for key in (k for k in mine if nodes[k].stage == "distill"):
                tail = tails(key)
                if tail:
                    groups.setdefault(signature(key), []).append(
                        {"params_yaml": text[key], "label": _label(nodes[tail[0][0]])})
            for sig, items in groups.items():
                with dsl.ParallelFor(items, name="distilled") as g:
                    generator = platform(c.distill(dataset=data, gan=gan, teacher=teacher,
                                                   params_yaml=g.params_yaml, **common), "distill")
                    evals = evaluations(data, teacher, generator.outputs["generator"], sig, g.label)
                for e in evals:
                    collect(d, e)
            # the pretrained GAN's own rows (cgan-only): a loop of one, so they reach the results like the rest
            if own := tails(f"{d}/gan"):
                with dsl.ParallelFor([{"label": _label(nodes[own[0][0]])}], name="pretrained") as g:
                    evals = evaluations(data, teacher, gan, signature(f"{d}/gan"), g.label)
                for e in evals:
                    collect(d, e)
            # real baselines: select then evaluate, one iteration per (method, IPC)
            items = [{"select": text[k], "evaluate": text[e], "label": _label(nodes[e])}
                     for k in mine if nodes[k].stage == "select" for e, _ in tails(k)]
            if items:
                with dsl.ParallelFor(items, name="baselines") as b:
                    subset = platform(c.select(dataset=data, teacher=teacher, params_yaml=b.select, **common),
                                      "select")
                    e = platform(c.evaluate(dataset=data, synthetic=subset.outputs["subset"],
                                            params_yaml=b.evaluate, label=b.label, **common), "evaluate")
                collect(d, e)
            # the whole training split
            full = [{"evaluate": text[e], "label": _label(nodes[e])} for e, s in tails(ingest_key) if s is None]
            if full:
                with dsl.ParallelFor(full, name="full") as f:
                    e = platform(c.evaluate(dataset=data, synthetic=data, params_yaml=f.evaluate, label=f.label,
                                            **common), "evaluate")
                collect(d, e)
        if state["records"] is None:
            raise ValueError(f"preset {matrix.preset['name']}: no cell to run")
        results = platform(c.reproduce_results(records=state["records"], matrix=json.dumps(matrix.spec)),
                           "results", cache=False)
        return outputs_type(results=results.outputs["results"], page=results.outputs["page"])

    # the signature KFP reads: artifact_root, s3_endpoint_url, then data_<key> per dataset (str, with defaults)
    params = [inspect.Parameter("artifact_root", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=options.artifact_root,
                                annotation=str),
              inspect.Parameter("s3_endpoint_url", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="", annotation=str)]
    params += [inspect.Parameter(data_param(d), inspect.Parameter.POSITIONAL_OR_KEYWORD, default=matrix.locations[d],
                                 annotation=str) for d in chosen]
    outputs_type = NamedTuple("Outputs", [("results", Artifact), ("page", Markdown)])

    def skdd_reproduce(*args, **kwargs):   # KFP passes the parameters positionally, in signature order
        return pipeline_body(**dict(zip((p.name for p in params), args)), **kwargs)

    skdd_reproduce.__signature__ = inspect.Signature(params, return_annotation=outputs_type)
    skdd_reproduce.__annotations__ = {p.name: str for p in params} | {"return": outputs_type}
    description = (f"Reproduce the paper's tables, preset {matrix.preset['name']}: "
                   f"{len(plan.cells)} cells over {len(plan.nodes)} stages, fanned out per source.")
    return dsl.pipeline(name=PIPELINE_NAME, description=description)(skdd_reproduce)


def compile_reproduce(options: PipelineOptions, matrix: Matrix, package_path: str | Path) -> Path:
    """Write the IR YAML of the preset's reproduction pipeline; deterministic for the same preset and options."""
    from kfp import compiler

    path = Path(package_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_reproduce_pipeline(options, matrix), str(path))
    return path
