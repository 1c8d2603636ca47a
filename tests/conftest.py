"""Fixtures shared across test modules."""

from __future__ import annotations

import pytest

from s3_server import client_env, start_server


@pytest.fixture(scope="session")
def dvc_smoke(tmp_path_factory):
    """One real `dvc repro` of the smoke profile for the whole session: test_dvc.py checks and changes it,
    test_kfp_local.py compares the Kubeflow pipeline's run with a snapshot of its first evaluation."""
    from dvc_project import first_repro

    repo, snapshot = tmp_path_factory.mktemp("project"), tmp_path_factory.mktemp("dvc-first-repro")
    env, first = first_repro(repo, snapshot)
    return repo, env, first, snapshot


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real SeaweedFS S3 server per test module (modules using it skip when `weed` is not installed)."""
    srv = start_server(tmp_path_factory.mktemp("seaweed"))
    yield srv
    srv.stop(timeout=3)  # nothing needs its data afterwards; its filer can take >10s to drain


@pytest.fixture
def s3env(server, monkeypatch, tmp_path):
    """skdd's S3 environment pointed at `server`, with a per-test cache."""
    client_env(monkeypatch, tmp_path, server.endpoint)
    return server
