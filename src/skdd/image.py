"""The container image every Kubeflow component runs in: one setting, derived from the package version.

`SKDD_IMAGE` (also recorded in every manifest's code version) overrides it, as does
`skdd pipeline compile --image REF`. One image serves GPU and CPU nodes (containers/Dockerfile says why).
"""

from __future__ import annotations

import os

import skdd

REPOSITORY = "ghcr.io/skdd/skdd"


def default_image() -> str:
    """`ghcr.io/skdd/skdd:<version>`, unless `SKDD_IMAGE` says otherwise."""
    return os.environ.get("SKDD_IMAGE") or f"{REPOSITORY}:{skdd.__version__}"
