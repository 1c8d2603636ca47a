"""What `skdd pipeline run-local` needs to run the Kubeflow pipeline's steps in the image under `kfp.local`.

    skdd pipeline run-local [--runner docker|subprocess] [--image REF] [--preset FILE] [--param KEY=VALUE ...]
                            [--pipeline-root DIR] [--docker-network MODE]

The command itself is in skdd.pipeline_cli, beside compile and submit. `docker` (the default) runs every step in
the project image, as a cluster would: the same components, the same image, the same parameters as `submit`.
It is how a platform engineer checks an image build before pushing it. `subprocess` runs the steps in this
interpreter's environment (no Docker needed).

Two things a cluster provides are stood in for here:
* the S3 credentials: a cluster injects them from a Kubernetes Secret, which kfp.local ignores; run-local passes
  AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and SKDD_SIGNING_KEY, when set) from this shell's environment to
  each step's container as environment variables, never as parameters, files or image content;
* a step's exit status: kfp.local's DockerRunner starts containers with auto-remove and reports a container that
  is gone before its status is read as a success (kubeflow/pipelines#13332). Here each container is kept until
  its exit status is read, then removed, so a step that fails fails the run.

With the docker runner the steps see only the pipeline root (bind-mounted at the same path) and the network:
artifact_root must be an s3:// URI or a folder under the pipeline root, and with `--docker-network host` (the
default) an S3 endpoint on this machine's loopback is reachable from the steps.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Iterator

from skdd.errors import SkddError, one_line

CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "SKDD_SIGNING_KEY")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def docker_run_container(extra_env: dict[str, str]):
    """kfp.local's `run_docker_container`, keeping the container until its exit status is read and adding the
    credentials to the step's environment (the task's own variables win on a clash; there is none today)."""
    def run(client, image: str, command: list[str], volumes: dict[str, Any], **container_run_args) -> int:
        import docker

        from kfp.local.docker_task_handler import add_latest_tag_if_not_present

        image = add_latest_tag_if_not_present(image)
        if not client.images.list(name=image):
            print(f"Pulling image {image!r}", flush=True)
            client.images.pull(image)
        container_run_args.pop("auto_remove", None)
        env = {**extra_env, **(container_run_args.pop("environment", None) or {})}
        container = client.containers.run(image=image, command=command, detach=True, stdout=True, stderr=True,
                                          volumes=volumes, environment=env, auto_remove=False, **container_run_args)
        try:
            for line in container.logs(stream=True):
                print(line.decode(errors="replace"), end="", flush=True)
            return int(container.wait()["StatusCode"])
        finally:
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
    return run


@contextlib.contextmanager
def docker_steps(extra_env: dict[str, str]) -> Iterator[None]:
    """Within the block, kfp.local's DockerRunner reports real exit statuses and passes `extra_env`."""
    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = docker_run_container(extra_env)
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original


def check_docker(image: str) -> None:
    try:
        import docker
    except ImportError:
        raise SkddError("--runner docker needs the docker SDK: pip install 'skdd[pipeline]'") from None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - DockerException, connection errors: one line
        raise SkddError(f"the Docker daemon is not reachable ({one_line(exc)})") from None
    try:
        if not client.images.list(name=image):
            raise SkddError(f"image {image} is not on this machine: build it (`make image`) or pull it")
    finally:
        client.close()


def check_artifact_root(root: str, pipeline_root: Path) -> None:
    if root.startswith("s3://"):
        return
    path = Path(root).resolve()
    if pipeline_root != path and pipeline_root not in path.parents:
        raise SkddError(f"artifact_root {root}: the docker steps see only the pipeline root {pipeline_root}; "
                        "use an s3:// URI or a folder under it")
