"""Build the skdd image from this checkout: `make image` (stdlib only, so it runs before any venv exists).

    python3 containers/build_image.py [--tag REF] [--base IMAGE]

Anywhere with a registry this is a plain BuildKit build of containers/Dockerfile on `debian:bookworm-slim`. Two
things make it work on a machine without one, like skdd's own CI, without changing what users elsewhere get:

* the base: when `--base` is neither present nor pullable and mmdebstrap is installed, an equivalent Debian
  bookworm root is made from the machine's own Debian mirror (its apt sources) and imported as `local/debian:bookworm`;
* the package index: the build's pip uses the host pip's configuration (index-url, extra-index-url, find-links,
  trusted-host, cert), handed over as a pip.conf and a CA bundle in BuildKit secrets, so neither lands in a layer,
  the history or the cache key (a mirror URL with a token in it stays private). Local folders and file://
  indexes are served read-only on 127.0.0.1 for the build's duration, and the build then uses host networking.

One readable line and a non-zero exit on failure; the image is only tagged when the whole build succeeded.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import tomllib
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = "debian:bookworm-slim"
LOCAL_BASE = "local/debian:bookworm"
PIP_KEYS = ("index-url", "extra-index-url", "find-links", "trusted-host", "cert")


class BuildError(RuntimeError):
    pass


def docker_binary() -> str:
    """Debian's client first: another `docker` on PATH may lack BuildKit support (no buildx)."""
    for candidate in (os.environ.get("DOCKER"), "/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise BuildError("no docker client found (install Debian's docker.io, or set DOCKER)")


def default_tag() -> str:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return os.environ.get("SKDD_IMAGE") or f"ghcr.io/skdd/skdd:{version}"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, text=True, capture_output=True, **kw)


def ensure_base(docker: str, base: str) -> str:
    """`base` if the daemon has it or can pull it; else a Debian root from this machine's mirror."""
    if run([docker, "image", "inspect", base]).returncode == 0:
        return base
    pulled = run([docker, "pull", base])
    if pulled.returncode == 0:
        return base
    if base != DEFAULT_BASE:
        raise BuildError(f"base image {base} is neither present nor pullable: {pulled.stderr.strip()[-200:]}")
    if run([docker, "image", "inspect", LOCAL_BASE]).returncode == 0:
        return LOCAL_BASE
    if not shutil.which("mmdebstrap"):
        raise BuildError(f"{base} cannot be pulled (no registry?) and mmdebstrap is not installed to make it")
    mirror = debian_mirror()
    print(f"build_image: {base} cannot be pulled; making {LOCAL_BASE} from {mirror}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        made = run(["mmdebstrap", "--variant=minbase", "--include=ca-certificates", "bookworm", str(rootfs), mirror])
        if made.returncode != 0:
            raise BuildError(f"mmdebstrap failed: {made.stderr.strip()[-300:]}")
        imported = run([docker, "import", str(rootfs), LOCAL_BASE])
        if imported.returncode != 0:
            raise BuildError(f"docker import failed: {imported.stderr.strip()[-300:]}")
    return LOCAL_BASE


def debian_mirror() -> str:
    """The first Debian archive URL in the machine's apt sources (deb822 or one-line format)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        text = f.read_text(errors="replace") if f.is_file() else ""
        for url in re.findall(r"(https?://\S+/debian)/?(?:\s|$)", text):
            return url
    raise BuildError("no Debian mirror in /etc/apt/sources.list*: cannot make a base image")


def pip_config() -> dict[str, list[str]]:
    """The host pip's settings that decide where packages come from (`pip config list`, env included)."""
    out = run([sys.executable, "-m", "pip", "config", "list"])
    found: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        name = key.split(".", 1)[-1]
        if name in PIP_KEYS:
            found[name] = value.strip().strip("'\"").split()
    return found


class LocalIndex:
    """Serves local folders read-only on 127.0.0.1 (one server per folder) while the build runs."""

    def __init__(self) -> None:
        self.servers: list[http.server.ThreadingHTTPServer] = []
        self.by_folder: dict[Path, str] = {}

    def url(self, location: str, index: bool) -> str:
        """An http URL for a file:// URL or a folder. An index's pages link to `../../files/...`, so its parent
        folder is served; find-links folders are served themselves (their listing is the page)."""
        path = Path(urlparse(location).path if location.startswith("file:") else location).resolve()
        if not path.exists():
            raise BuildError(f"pip location {location} does not exist")
        folder = path.parent if index else path
        if folder not in self.by_folder:
            handler = functools.partial(_QuietHandler, directory=str(folder))
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            self.servers.append(server)
            self.by_folder[folder] = f"http://127.0.0.1:{server.server_address[1]}"
        return f"{self.by_folder[folder]}/{path.name}/" if index else f"{self.by_folder[folder]}/"

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def pip_conf(config: dict[str, list[str]], local: LocalIndex, has_ca: bool) -> str:
    """The build's pip.conf: the host's sources, local ones as loopback URLs, the CA bundle at its secret path."""
    lines = ["[global]"]
    for key in ("index-url", "extra-index-url", "find-links"):
        urls = [v if "://" in v and not v.startswith("file:") else local.url(v, index=key != "find-links")
                for v in config.get(key, [])]
        if urls:
            lines.append(f"{key} = {' '.join(urls)}")
    hosts = list(config.get("trusted-host", [])) + (["127.0.0.1"] if local.servers else [])
    if hosts:
        lines.append(f"trusted-host = {' '.join(hosts)}")
    if has_ca:
        lines.append("cert = /run/secrets/pip_ca")
    return "\n".join(lines) + "\n"


def git_revision() -> str:
    rev = run(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "pyproject.toml", "constraints.txt",
                 "containers", "README.md"])
    if rev.returncode != 0:
        return "unknown"
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def build(tag: str, base: str, host_pip: bool = True) -> None:
    docker = docker_binary()
    if run([docker, "info"]).returncode != 0:
        raise BuildError("the Docker daemon is not reachable (start dockerd, or check DOCKER_HOST)")
    base = ensure_base(docker, base)
    previous = image_id(docker, tag)
    root = run([docker, "info", "-f", "{{.DockerRootDir}}"]).stdout.strip()
    if root and Path(root).is_dir():
        print(f"build_image: {shutil.disk_usage(root).free / 1e9:.1f} GB free under {root} "
              "(a clean build needs about 10)", flush=True)
    local = LocalIndex()
    with tempfile.TemporaryDirectory() as tmp:
        config = pip_config() if host_pip else {}
        cert = (config.get("cert") or [None])[0]
        has_ca = bool(cert and Path(cert).is_file())
        conf = Path(tmp) / "pip.conf"
        conf.write_text(pip_conf(config, local, has_ca))
        build_args = {"BASE_IMAGE": base, "SKDD_IMAGE": tag, "VCS_REF": git_revision()}
        cmd = [docker, "build", "-f", str(ROOT / "containers" / "Dockerfile"), "-t", tag,
               "--secret", f"id=pip_conf,src={conf}"]
        if has_ca:
            cmd += ["--secret", f"id=pip_ca,src={cert}"]
        if local.servers:
            cmd += ["--network", "host"]
        for key, value in build_args.items():
            cmd += ["--build-arg", f"{key}={value}"]
        cmd.append(str(ROOT))
        print(f"build_image: building {tag} on {base}", flush=True)
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        try:
            done = subprocess.run(cmd, env=env)
        finally:
            local.close()
        if done.returncode != 0:
            raise BuildError(f"docker build of {tag} failed (exit {done.returncode}); its output is above")
    size = run([docker, "image", "inspect", "-f", "{{.Size}}", tag]).stdout.strip()
    print(f"build_image: {tag} built ({int(size) / 1e9:.2f} GB)" if size.isdigit() else f"build_image: {tag} built")
    if previous and previous != image_id(docker, tag):
        # The tag moved: the image it named is now untagged and holds several GB nobody can name; drop it
        # (docker refuses while a container or another tag still uses it, and then it stays).
        gone = run([docker, "image", "rm", previous]).returncode == 0
        print(f"build_image: previous {previous[:19]} " + ("removed" if gone else "kept (still in use)"))


def image_id(docker: str, tag: str) -> str | None:
    """The image ID a tag names now, or None where it names none."""
    found = run([docker, "image", "inspect", "-f", "{{.Id}}", tag])
    return found.stdout.strip() or None if found.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tag", default=default_tag(), help="image reference (default: ghcr.io/skdd/skdd:<version>, "
                                                         "or SKDD_IMAGE)")
    ap.add_argument("--base", default=DEFAULT_BASE, help="base image (Debian bookworm)")
    ap.add_argument("--no-host-pip", action="store_true", help="ignore the host's pip configuration (plain PyPI)")
    args = ap.parse_args(argv)
    try:
        build(args.tag, args.base, host_pip=not args.no_host_pip)
    except BuildError as exc:
        print(f"build_image: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
