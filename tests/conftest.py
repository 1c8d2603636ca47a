"""Fixtures shared across test modules."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def dvc_smoke(tmp_path_factory):
    """One real `dvc repro` of the smoke profile for the whole session: test_dvc.py checks and changes it,
    test_kfp_local.py compares the Kubeflow pipeline's run with a snapshot of its first evaluation."""
    from dvc_project import first_repro

    repo, snapshot = tmp_path_factory.mktemp("project"), tmp_path_factory.mktemp("dvc-first-repro")
    env, first = first_repro(repo, snapshot)
    return repo, env, first, snapshot
