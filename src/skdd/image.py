"""The container image every Kubeflow component runs in: one setting, derived from the package version.

`SKDD_IMAGE` (also recorded in every manifest's code version) overrides it, as does
`skdd pipeline compile --image REF`. The CPU variant carries a `-cpu` tag suffix.
"""

from __future__ import annotations

import os

import skdd

REPOSITORY = "ghcr.io/skdd/skdd"


def default_image(variant: str = "cuda") -> str:
    """`ghcr.io/skdd/skdd:<version>` (CUDA) or `...:<version>-cpu`, unless `SKDD_IMAGE` says otherwise."""
    if variant not in ("cuda", "cpu"):
        raise ValueError(f"image variant must be cuda or cpu, not {variant!r}")
    override = os.environ.get("SKDD_IMAGE")
    if override:
        return override
    suffix = "" if variant == "cuda" else "-cpu"
    return f"{REPOSITORY}:{skdd.__version__}{suffix}"
