"""What the image build reads, checked without a Docker engine (tests/test_image.py builds and runs the image).

Only what a real build cannot show stays here: the build context keeps local state and credentials out and lets
in what the install reads; the Dockerfile's literal defaults (version label, image reference, base tag) follow
the package version; the image reference's one setting. Everything about the built image itself (its user, no
compiler, the pinned set, the pipeline in it) is tested on the image.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "containers" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
# What the image's install reads from the bind-mounted checkout (`pip install -c constraints.txt '.[pipeline]'`;
# pyproject names README.md as the readme).
BUILD_READS = ["pyproject.toml", "README.md", "constraints.txt", "src", "src/skdd/cli.py"]


def test_dockerfile_defaults_follow_the_package():
    text = DOCKERFILE.read_text()
    assert f'org.opencontainers.image.version="{VERSION}"' in text
    assert re.search(rf"^ARG SKDD_IMAGE=ghcr\.io/skdd/skdd:{re.escape(VERSION)}$", text, re.M)
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)[1]
    assert ":" in base and not base.endswith(":latest"), f"base image {base} not pinned to a tag"
    # the one project install: pinned by constraints.txt, the non-dev extras, not editable
    extras = sorted(set(PYPROJECT["project"]["optional-dependencies"]) - {"test"})
    installs = re.findall(r"pip install[^&\n]*'\.\[([^\]]*)\]'", text)
    assert installs == [",".join(extras)]
    assert "-c constraints.txt '.[" in text and " -e " not in text
    assert re.search(r"^USER 10001:10001$", text, re.M)


# ---- .dockerignore: Docker's rules (last matching pattern wins; a path is also matched by its parents) --------
def _pattern(pattern: str) -> re.Pattern:
    out, i = "", 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_excludes(path: str, text: str) -> bool:
    rules = [(line.startswith("!"), _pattern(line.lstrip("!"))) for line in map(str.strip, text.splitlines())
             if line and not line.startswith("#")]
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negated, rx in rules:
        if any(rx.fullmatch(p) for p in prefixes):
            excluded = not negated
    return excluded


IGNORED = [".venv/bin/python", "artifacts/report/report.md", ".git/HEAD", ".dvc/cache/files/md5/ab/cdef",
           ".dvc/tmp/lock", ".dvc/config.local", ".pytest_cache/v/cache/lastfailed", "tests/test_s3.py",
           "tests/__pycache__/helpers.cpython-311.pyc", "src/skdd/__pycache__/cli.cpython-311.pyc",
           "src/skdd.egg-info/PKG-INFO", "datasets/SOURCES.md", "build/lib/skdd/cli.py", "kfp-local/x/y",
           "runs/cpu-skd/results.json", ".env"]


def test_dockerignore_keeps_out_local_state_and_lets_in_what_the_build_reads():
    text = (ROOT / ".dockerignore").read_text()
    leaked = [p for p in IGNORED if not dockerignore_excludes(p, text)]
    assert leaked == []
    missing = [p for p in BUILD_READS if dockerignore_excludes(p, text)]
    assert missing == []
    # The matcher itself is live: without the file everything would reach the build.
    assert not dockerignore_excludes(".venv/bin/python", "# nothing\n")
    assert dockerignore_excludes("src/skdd/cli.py", text + "\nsrc\n")


def test_default_image_tag_is_the_package_version(monkeypatch):
    import skdd
    from skdd import image

    monkeypatch.delenv("SKDD_IMAGE", raising=False)
    assert skdd.__version__ == VERSION
    assert image.default_image() == f"ghcr.io/skdd/skdd:{VERSION}"
    monkeypatch.setenv("SKDD_IMAGE", "registry.example.com/skdd:dev")
    assert image.default_image() == "registry.example.com/skdd:dev"
