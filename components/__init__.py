"""Kubeflow components, one per skdd stage, built for one container image.

Each module holds a plain function; `make_components(image)` turns them into lightweight Python components
(`base_image=image`, `install_kfp_package=False`: the image already has skdd and kfp). KFP ships a component
as its function's source text, so the functions are thin: they import `skdd.kfp_steps` inside the body and
call the same `skdd.stages.registry.run_stage` the CLI and DVC call. Which stages have a component is the stage
registry's `component` flag: `components/<stage>.py` defines a function named after the stage. Lightweight (not
containerized) components are what `kfp.local.SubprocessRunner` runs, so the very same pipeline runs here and on
a cluster.

Artifacts: ingest, sample and refine emit `Dataset`, teacher, pretrain, pool and distill `Model`, evaluate `Metrics`
(+ its `Markdown` report), report a `Markdown` comparison; each carries the skdd manifest's key facts as metadata.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

from components.fingerprint import fingerprint_source
from components.reproduce import collect_evaluations, reproduce_results
from skdd.stages.registry import STAGES

# the source fingerprint (not a stage: it keys ingest's cache on the data), one component per stage, and the
# reproduction pipeline's fan-in (not stages either)
FUNCTIONS = {"fingerprint_source": fingerprint_source, **{
    name: getattr(importlib.import_module(f"components.{name}"), name)
    for name, spec in STAGES.items() if spec.component},
    "collect_evaluations": collect_evaluations, "reproduce_results": reproduce_results}


def make_components(image: str) -> SimpleNamespace:
    """The components, each running in `image`."""
    from kfp import dsl

    if not image or any(c.isspace() for c in image):
        raise ValueError(f"image reference {image!r} is empty or contains whitespace")
    return SimpleNamespace(**{name: dsl.component(func, base_image=image, install_kfp_package=False)
                              for name, func in FUNCTIONS.items()})
