"""dvc.yaml's code deps cannot go stale: every stage lists every skdd source file its command imports.

A missing dep means `dvc repro` reuses an output made by old code and reports it as current, so the check is
computed, not hand-kept: the import closure of the stage's module (from the stage registry) must be covered by
the stage's deps (a listed file, or a folder above it)."""

from __future__ import annotations

import re

import pytest
import yaml

from skdd.stages.registry import STAGES

from import_closure import ROOT, closure, covered

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(DVC))
def test_stage_deps_cover_its_import_closure(name):
    body = DVC[name].get("do", DVC[name])
    stage = re.search(r"\bskdd (\w+)", body["cmd"]).group(1)
    assert stage in STAGES, f"dvc stage {name!r} runs unknown skdd stage {stage!r}"
    missing = sorted(f for f in closure(STAGES[stage].module) if not covered(f, body["deps"]))
    assert not missing, f"dvc.yaml stage {name!r} does not list {missing} (imported by {STAGES[stage].module})"
    for dep in body["deps"]:
        if dep.startswith("src/"):
            assert (ROOT / dep).exists(), f"dvc.yaml stage {name!r} lists {dep}, which does not exist"


def test_closure_follows_imports_inside_functions():
    files = closure("skdd.stages.sample")        # sample imports the teacher module inside run()
    assert "src/skdd/stages/teacher.py" in files and "src/skdd/stages/sample.py" in files
    assert "src/skdd/models/convnet.py" in files  # through `from skdd.models import ...` (the package __init__)
    assert "src/skdd/cli.py" not in files
