"""Kubeflow components, one per skdd stage, built for one container image.

Each module holds a plain function; `make_components(image)` turns them into lightweight Python components
(`base_image=image`, `install_kfp_package=False`: the image already has skdd and kfp). KFP ships a component
as its function's source text, so the functions are thin: they import `skdd.kfp_steps` inside the body and
call the same `skdd.cli.run_stage` the CLI and DVC call. Lightweight (not containerized) components are
what `kfp.local.SubprocessRunner` runs, so the very same pipeline runs here and on a cluster.

Artifacts: ingest, sample and refine emit `Dataset`, teacher, pretrain and distill `Model`, evaluate `Metrics` (+ its
`Markdown` report), report a `Markdown` comparison; each carries the skdd manifest's key facts as metadata.
"""

from __future__ import annotations

from types import SimpleNamespace

from components.distill import distill
from components.evaluate import evaluate
from components.fingerprint import fingerprint_source
from components.ingest import ingest
from components.pretrain import pretrain
from components.refine import refine
from components.report import report
from components.sample import sample
from components.teacher import teacher

FUNCTIONS = {f.__name__: f for f in (fingerprint_source, ingest, teacher, pretrain, distill, sample, refine,
                                     evaluate, report)}


def make_components(image: str) -> SimpleNamespace:
    """The components, each running in `image`."""
    from kfp import dsl

    if not image or any(c.isspace() for c in image):
        raise ValueError(f"image reference {image!r} is empty or contains whitespace")
    return SimpleNamespace(**{name: dsl.component(func, base_image=image, install_kfp_package=False)
                              for name, func in FUNCTIONS.items()})
