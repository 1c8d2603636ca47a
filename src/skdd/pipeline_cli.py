"""`skdd pipeline compile|submit|run-local`: the Kubeflow pipeline's IR YAML, and runs of it on a cluster or here.

    skdd pipeline compile [--image REF] [--output FILE] [--params FILE] [--gpu-stages distill,refine,pretrain]
                          [--gpu-node-selector KEY=VALUE ...] [--gpu-toleration KEY[=VALUE]:EFFECT ...]
                          [--s3-secret NAME] [--signing-secret NAME] [--artifact-root URI]
                          [--preset PRESET [--data DATASET=[SOURCE:]LOCATION ...]]
    skdd pipeline submit --host URL [--package FILE] [--experiment NAME] [--run-name NAME]
                         [--param KEY=VALUE ...] [--preset FILE] [--namespace NS] [--no-cache] [--dry-run]
    skdd pipeline run-local [--runner docker|subprocess] [--image REF] [--preset FILE] [--param KEY=VALUE ...]

The pipeline and its components live at the top of the repository (`pipelines/`, `components/` beside `src/`)
and are installed with skdd as packages of their own, so both commands work from an installed package. The
committed `pipelines/skdd_pipeline.yaml` is `compile`'s output for the default image and flags (regenerate: `skdd pipeline compile --output pipelines/skdd_pipeline.yaml`).
`compile --preset benchmarks/presets/<name>.yaml` compiles the preset's reproduction matrix instead, as the
pipeline `skdd-reproduce` (pipelines/reproduce_pipeline.py; the shipped presets' are committed under
`pipelines/reproduce-<name>.yaml`, regenerate: `make pipelines`); its parameters are artifact_root, s3_endpoint_url and data_<dataset>.
`submit` sends a compiled package through `kfp.Client`; every `--param` is checked against the package's
inputs and, where it sets a stage param, against that param's rules, before anything is sent. Errors are one
line and exit code 2. Credentials are never arguments: tasks read them from the Kubernetes Secret.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import yaml

from skdd import lineage
from skdd.errors import SkddError, one_line
from skdd.stages.registry import STAGES

GPU_CAPABLE = tuple(name for name, spec in STAGES.items() if spec.gpu)
DEFAULT_GPU_STAGES = ("distill", "refine")
RUNNERS = ("docker", "subprocess")   # run-local
PRESET_STAGES = tuple(name for name, spec in STAGES.items() if spec.component)   # what the pipeline runs
# pipeline parameter -> the stage params it sets (what the components pass as --set overrides)
PARAM_TARGETS: dict[str, list[tuple[str, str]]] = {
    "dataset_source": [("ingest", "source")],
    "dataset_location": [("ingest", "location")],
    "dataset_name": [("ingest", "name")],
    "loss": [("distill", "loss")],
    "architectures": [("evaluate", "architectures")],
    "device": [(stage, "device") for stage in ("teacher", "pretrain", "distill", "sample", "refine", "evaluate")],
    "ipc_list": [("sample", "ipc")],   # one sample per entry
}


# ------------------------------------------------------------------------------------------- parser
def add_parser(sub: Any) -> None:
    """Register `skdd pipeline ...` (no kfp import here: `skdd --help` stays fast without the extra)."""
    p = sub.add_parser("pipeline", help="compile, submit or run locally the Kubeflow pipeline")
    psub = p.add_subparsers(dest="pipeline_command", required=True)
    c = psub.add_parser("compile", help="write the pipeline's IR YAML (pipeline spec + Kubernetes platform spec)")
    c.add_argument("--image", default=None,
                   help="container image of every component (default: $SKDD_IMAGE, else ghcr.io/skdd/skdd:<version>)")
    c.add_argument("--output", "-o", default="skdd_pipeline.yaml", help="where to write (default: %(default)s)")
    c.add_argument("--params", default=None, metavar="FILE",
                   help="preset whose text is the params_yaml default (default: params.yaml in the current folder)")
    c.add_argument("--gpu-stages", default=",".join(DEFAULT_GPU_STAGES), metavar="STAGES",
                   help=f"comma-separated stages that request a GPU, from {', '.join(GPU_CAPABLE)} "
                        "(default: %(default)s; 'none' for none)")
    c.add_argument("--gpus", type=int, default=1, help="GPUs per GPU stage (default: %(default)s)")
    c.add_argument("--gpu-node-selector", action="append", default=None, metavar="KEY=VALUE",
                   help="node label GPU stages require (repeatable; default nvidia.com/gpu.present=true; 'none')")
    c.add_argument("--gpu-toleration", action="append", default=None, metavar="KEY[=VALUE]:EFFECT",
                   help="taint GPU stages tolerate (repeatable; default nvidia.com/gpu:NoSchedule, i.e. Exists; "
                        "'none')")
    c.add_argument("--retries", type=int, default=2, metavar="N",
                   help="retries of a failed task, e.g. a preempted pod; training resumes from the checkpoints "
                        "mirrored to S3 (default: %(default)s; 0 for none)")
    c.add_argument("--s3-secret", default="skdd-s3-credentials", metavar="NAME",
                   help="Kubernetes Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (default: %(default)s)")
    c.add_argument("--signing-secret", default=None, metavar="NAME",
                   help="Kubernetes Secret holding SKDD_SIGNING_KEY: every task signs its manifests with it "
                        "(check with `skdd lineage verify --key`; default: no signing)")
    c.add_argument("--artifact-root", default="s3://skdd/artifacts", metavar="URI",
                   help="default artifact_root parameter (default: %(default)s)")
    c.add_argument("--preset", default=None, metavar="PRESET",
                   help="a reproduction preset (benchmarks/presets/*.yaml): compile its matrix as the pipeline "
                        "skdd-reproduce instead of the main pipeline")
    c.add_argument("--data", action="append", default=[], metavar="DATASET=[SOURCE:]LOCATION",
                   help="with --preset: a dataset's copy, e.g. mnist=idx:s3://bucket/mnist (the data_<dataset> "
                        "parameter's default; repeatable)")
    s = psub.add_parser("submit", help="submit a run of the compiled pipeline through kfp.Client")
    s.add_argument("--host", required=True, help="Kubeflow Pipelines API, e.g. http://localhost:8080")
    s.add_argument("--package", default=None, metavar="FILE",
                   help="compiled pipeline (default: the committed pipelines/skdd_pipeline.yaml, installed with skdd)")
    s.add_argument("--experiment", default="skdd", help="experiment name (created if missing; default: %(default)s)")
    s.add_argument("--run-name", default=None, help="run name (default: 'skdd <date time>')")
    s.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a pipeline parameter (repeatable); lists as 1,10,50 or [1, 10, 50]")
    s.add_argument("--preset", default=None, metavar="FILE",
                   help="params file sent as params_yaml (its sample.ipc also sets ipc_list unless --param does)")
    s.add_argument("--namespace", default=None, help="Kubernetes namespace (multi-user deployments)")
    s.add_argument("--no-cache", action="store_true", help="disable KFP caching for this run")
    s.add_argument("--dry-run", action="store_true", help="print what would be submitted; no network")
    add_run_local_arguments(psub.add_parser(
        "run-local", help="run the pipeline on this machine under kfp.local, each step in the image (Docker) or "
                          "in this environment"))


def add_run_local_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runner", choices=RUNNERS, default="docker",
                   help="docker: every step in the image (default); subprocess: in this environment")
    p.add_argument("--image", default=None,
                   help="image of every step (default: $SKDD_IMAGE, else ghcr.io/skdd/skdd:<version>)")
    p.add_argument("--preset", default=None, metavar="FILE",
                   help="params file for the run (default: params.yaml in the current folder)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a pipeline parameter, as for submit (repeatable)")
    p.add_argument("--pipeline-root", default="kfp-local", metavar="DIR",
                   help="kfp.local's working folder; the only host folder the steps see (default: %(default)s)")
    p.add_argument("--docker-network", default="host", metavar="MODE",
                   help="network of the step containers (default: %(default)s, so a loopback S3 endpoint works)")


def main(args: argparse.Namespace) -> int:
    try:
        if args.pipeline_command == "compile":
            return compile_command(args)
        if args.pipeline_command == "run-local":
            return run_local(args)
        return submit_command(args)
    except SkddError as exc:
        print(f"skdd pipeline {args.pipeline_command}: error: {exc}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------------------- shared
NOT_INSTALLED = "the skdd pipelines package is not installed: pip install 'skdd[pipeline]'"


def committed_package() -> Path:
    """The compiled pipeline shipped with the `pipelines` package (the committed `pipelines/skdd_pipeline.yaml`)."""
    from importlib import resources

    try:
        return Path(str(resources.files("pipelines") / "skdd_pipeline.yaml"))
    except ModuleNotFoundError:
        raise SkddError(NOT_INSTALLED) from None


def pipeline_module():
    """`pipelines.skdd_pipeline`, installed with skdd (no source checkout needed)."""
    try:
        import kfp  # noqa: F401
        import kfp.kubernetes  # noqa: F401
    except ImportError:
        raise SkddError("skdd pipeline needs kfp and kfp-kubernetes: pip install 'skdd[pipeline]'") from None
    try:
        from pipelines import skdd_pipeline
    except ModuleNotFoundError:
        raise SkddError(NOT_INSTALLED) from None
    return skdd_pipeline


def read_preset(path: str | Path) -> str:
    """A params file's text, after checking every stage section the pipeline uses (one line naming the key)."""
    from skdd.config import read_params_file

    check_sections(read_params_file(path), str(path))
    return Path(path).read_text()


def compile_preset(path: str | None, flag: str) -> str:
    """The preset a pipeline is built with: `path`, else params.yaml in the current folder, checked."""
    params_path = Path(path or "params.yaml")
    if not params_path.is_file():
        raise SkddError(f"{flag}: {params_path} not found (default: params.yaml in the current folder)")
    return read_preset(params_path)


def check_sections(content: dict[str, Any], where: str) -> None:
    from skdd.config import from_dict

    for stage in PRESET_STAGES:
        section = content.get(stage) or {}
        if not isinstance(section, dict):
            raise SkddError(f"{where}: section '{stage}' must be a mapping")
        try:
            from_dict(STAGES[stage].params_class(), section, stage)
        except SkddError as exc:
            raise SkddError(f"{where}: {exc}") from None


def preset_ipcs(params_text: str) -> list[int]:
    """A preset's sample.ipc, as the pipeline's ipc_list."""
    data = yaml.safe_load(params_text) or {}
    ipc = ((data.get("sample") or {}) if isinstance(data, dict) else {}).get("ipc", 10)
    return [int(ipc)]


# ------------------------------------------------------------------------------------------ compile
def _pairs(values: list[str] | None, default: tuple, parse) -> tuple:
    if values is None:
        return default
    if values == ["none"]:
        return ()
    return tuple(parse(v) for v in values)


def _selector(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise SkddError(f"--gpu-node-selector {text!r}: expected KEY=VALUE")
    return key.strip(), value.strip()


def compile_command(args: argparse.Namespace) -> int:
    from skdd.image import default_image

    mod = pipeline_module()
    if args.preset and args.params:
        raise SkddError("--preset and --params: give one (a reproduction preset or the main pipeline's params)")
    params_text = "" if args.preset else compile_preset(args.params, "--params")
    stages = () if args.gpu_stages.strip() == "none" else tuple(s.strip() for s in args.gpu_stages.split(",") if s.strip())

    def toleration(text: str):
        try:
            return mod.Toleration.parse(text)
        except ValueError as exc:
            raise SkddError(f"--gpu-toleration: {exc}") from None

    try:
        options = mod.PipelineOptions(
            image=args.image or default_image(), params_yaml=params_text, gpu_stages=stages, gpu_count=args.gpus,
            node_selector=_pairs(args.gpu_node_selector, mod.PipelineOptions.node_selector, _selector),
            tolerations=_pairs(args.gpu_toleration, mod.DEFAULT_TOLERATIONS, toleration),
            secret_name=args.s3_secret, signing_secret=args.signing_secret, artifact_root=args.artifact_root,
            retries=args.retries)
        path = compile_matrix(options, args) if args.preset else mod.compile_pipeline(options, args.output)
    except ValueError as exc:
        raise SkddError(str(exc)) from None
    print(json.dumps({"output": str(path), "image": options.image, "gpu_stages": list(options.gpu_stages),
                      "sha256": lineage.sha256_file(path)}))
    return 0


def load_reproduce_matrix(preset: str, data: list[str], root: Path | None = None):
    """A reproduction preset planned for the pipeline (relative paths from the current folder), one-line errors."""
    try:
        from pipelines import reproduce_pipeline
    except ModuleNotFoundError:
        raise SkddError(NOT_INSTALLED) from None
    from skdd.reproduce.matrix import PresetError

    path = Path(preset)
    if not path.is_file():
        raise SkddError(f"--preset: {preset} not found")
    try:
        return reproduce_pipeline, reproduce_pipeline.load_matrix(path, (root or Path.cwd()).resolve(), data)
    except PresetError as exc:
        raise SkddError(str(exc)) from None


def compile_matrix(options, args: argparse.Namespace) -> Path:
    mod, matrix = load_reproduce_matrix(args.preset, args.data)
    output = args.output if args.output != "skdd_pipeline.yaml" else f"skdd-reproduce-{matrix.preset['name']}.yaml"
    return mod.compile_reproduce(options, matrix, output)


# ------------------------------------------------------------------------------------------- submit
def package_inputs(path: Path) -> dict[str, dict[str, Any]]:
    """The compiled pipeline's parameters: name -> {"parameterType", "defaultValue"?}."""
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except OSError as exc:
        raise SkddError(f"{path}: cannot read the pipeline package ({one_line(exc)})") from None
    except yaml.YAMLError:
        raise SkddError(f"{path}: not a YAML pipeline package") from None
    spec = docs[0] if docs else {}
    if not isinstance(spec, dict) or "root" not in spec or "deploymentSpec" not in spec:
        raise SkddError(f"{path}: not a compiled KFP pipeline (no root / deploymentSpec)")
    return dict(((spec["root"].get("inputDefinitions") or {}).get("parameters") or {}))


def _coerce(name: str, raw: str, kind: str) -> Any:
    bad = SkddError(f"--param {name}={raw}: expected {kind.lower().replace('_', ' ')}")
    if kind == "STRING":
        return raw
    if kind in ("NUMBER_INTEGER", "NUMBER_DOUBLE"):
        try:
            return int(raw) if kind == "NUMBER_INTEGER" else float(raw)
        except ValueError:
            raise bad from None
    if kind == "BOOLEAN":
        if raw.lower() not in ("true", "false"):
            raise bad
        return raw.lower() == "true"
    try:
        value = yaml.safe_load(raw) if raw.strip() else ([] if kind == "LIST" else {})
    except yaml.YAMLError:
        raise bad from None
    if kind == "LIST" and not isinstance(value, list):
        value = [yaml.safe_load(v) for v in raw.split(",") if v.strip()] if isinstance(value, (str, int, float)) else None
    if (kind == "LIST" and not isinstance(value, list)) or (kind == "STRUCT" and not isinstance(value, dict)):
        raise bad
    return value


def check_against_params(arguments: dict[str, Any], params_text: str) -> None:
    """Apply the stage-param arguments to the preset and validate each touched stage as the component will."""
    from skdd.config import from_dict

    try:
        content = yaml.safe_load(params_text) or {}
    except yaml.YAMLError:
        raise SkddError("params_yaml: not valid YAML") from None
    if not isinstance(content, dict):
        raise SkddError("params_yaml: expected a mapping of stage sections")
    check_sections(content, "params_yaml")
    ipcs = arguments.get("ipc_list")
    if ipcs is not None:
        if not ipcs:
            raise SkddError("--param ipc_list: give at least one IPC")
        if len(set(map(str, ipcs))) != len(ipcs):   # equal IPCs would write the same content-keyed artifact at once
            raise SkddError(f"--param ipc_list: {ipcs} lists an IPC twice")
    for name, targets in PARAM_TARGETS.items():
        value = arguments.get(name)
        if value in (None, "", []):
            continue
        for stage, key in targets:
            for item in (value if name == "ipc_list" else [value]):
                section = dict(content.get(stage) or {}, **{key: item})
                try:
                    from_dict(STAGES[stage].params_class(), section, stage)
                except SkddError as exc:
                    raise SkddError(f"--param {name}: {exc}") from None


def pipeline_arguments(inputs: dict[str, dict[str, Any]], params: list[str], preset: str | None) -> dict[str, Any]:
    """The run's arguments from `--preset` and `--param KEY=VALUE`, typed by the package's inputs and checked
    against the stage params they set (what submit and run-local send)."""
    arguments: dict[str, Any] = {}
    if preset:
        if "params_yaml" not in inputs:
            raise SkddError("--preset: the pipeline package has no params_yaml parameter")
        arguments["params_yaml"] = read_preset(preset)
        if "ipc_list" in inputs:   # the compiled default is the compile-time preset's; follow this one
            arguments["ipc_list"] = preset_ipcs(arguments["params_yaml"])
    for item in params:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise SkddError(f"--param {item!r}: expected KEY=VALUE")
        if name not in inputs:
            raise SkddError(f"--param {name}: not a parameter of the pipeline (parameters: {', '.join(sorted(inputs))})")
        arguments[name] = _coerce(name, raw, inputs[name].get("parameterType", "STRING"))
    params_text = arguments.get("params_yaml", (inputs.get("params_yaml") or {}).get("defaultValue", ""))
    check_against_params(arguments, params_text)
    return arguments


def submit_plan(args: argparse.Namespace) -> dict[str, Any]:
    package = Path(args.package) if args.package else committed_package()
    arguments = pipeline_arguments(package_inputs(package), args.param, args.preset)
    run_name = args.run_name or f"skdd {_dt.datetime.now():%Y-%m-%d %H-%M-%S}"
    return {"host": args.host, "package": str(package), "package_sha256": lineage.sha256_file(package),
            "experiment": args.experiment, "run_name": run_name, "namespace": args.namespace,
            "enable_caching": False if args.no_cache else None, "arguments": arguments}


def _describe(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan as printed: params_yaml shown by size and hash, never in full."""
    shown = dict(plan, arguments=dict(plan["arguments"]))
    text = shown["arguments"].get("params_yaml")
    if isinstance(text, str):
        shown["arguments"]["params_yaml"] = (f"<{len(text.splitlines())} lines, "
                                             f"sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}>")
    return shown


def _check_reachable(host: str, timeout: float = 5.0) -> None:
    """One quick request first, so an unreachable host is one line, not kfp's minutes of retries."""
    import urllib.error
    import urllib.request

    if not host.startswith(("http://", "https://")):
        raise SkddError(f"--host {host}: give the API's URL with http:// or https://")
    try:
        with urllib.request.urlopen(host.rstrip("/") + "/apis/v2beta1/healthz", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return   # it answered: reachable (auth and the like are kfp.Client's business)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SkddError(f"{host}: cannot reach the Kubeflow Pipelines API ({one_line(reason)})") from None


def _api_error(host: str, exc: BaseException) -> SkddError:
    status = getattr(exc, "status", None)
    if status is not None:
        body = getattr(exc, "body", "") or ""
        try:
            detail = json.loads(body)
            detail = detail.get("message") or detail.get("error") or body
        except (ValueError, AttributeError):
            detail = body
        detail = " ".join(str(detail).split())[:300]
        return SkddError(f"{host}: Kubeflow Pipelines API answered {status} {getattr(exc, 'reason', '')}"
                         f"{': ' + detail if detail else ''}")
    return SkddError(f"{host}: submission failed ({one_line(exc)})")


def submit_command(args: argparse.Namespace) -> int:
    plan = submit_plan(args)
    if args.dry_run:
        print(json.dumps({"dry_run": True, **_describe(plan)}, indent=2))
        return 0
    try:
        import kfp
    except ImportError:
        raise SkddError("skdd pipeline submit needs kfp: pip install 'skdd[pipeline]'") from None
    host = plan["host"].rstrip("/")
    _check_reachable(host)
    chatter = io.StringIO()   # kfp prints its own links; ours is the one JSON line below
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
            warnings.simplefilter("ignore")
            client = kfp.Client(host=host, namespace=plan["namespace"] or "kubeflow")
            result = client.create_run_from_pipeline_package(
                plan["package"], arguments=plan["arguments"], run_name=plan["run_name"],
                experiment_name=plan["experiment"], namespace=plan["namespace"],
                enable_caching=plan["enable_caching"])
    except SkddError:
        raise
    except Exception as exc:  # noqa: BLE001 - ApiException, urllib3 errors, kfp's ValueErrors: one line
        raise _api_error(host, exc) from None
    print(json.dumps({"run_id": result.run_id, "run_name": plan["run_name"], "experiment": plan["experiment"],
                      "url": f"{host}/#/runs/details/{result.run_id}"}))
    return 0


# ------------------------------------------------------------------------------------------ run-local
def run_local(args: argparse.Namespace) -> int:
    """The pipeline under kfp.local with the same options and argument checks as compile and submit, so what
    runs here is what a cluster would run (skdd.pipeline_local says what stands in for the cluster)."""
    from skdd.image import default_image
    from skdd.pipeline_local import (CREDENTIAL_ENV, ANSI_ESCAPE, check_artifact_root, check_docker,
                                     docker_steps)

    mod = pipeline_module()
    image = args.image or default_image()
    params_text = compile_preset(args.preset, "--preset")
    try:
        options = mod.PipelineOptions(image=image, params_yaml=params_text, retries=0)
    except ValueError as exc:
        raise SkddError(str(exc)) from None
    with tempfile.TemporaryDirectory() as tmp:   # the compiled inputs: names and types, as submit checks them
        inputs = package_inputs(mod.compile_pipeline(options, Path(tmp) / "pipeline.yaml"))
    arguments = pipeline_arguments(inputs, args.param, None)
    pipeline_root = Path(args.pipeline_root).resolve()
    artifact_root = str(arguments.get("artifact_root", inputs["artifact_root"].get("defaultValue", "")))
    if args.runner == "docker":
        check_docker(image)
        check_artifact_root(artifact_root, pipeline_root)
    pipeline_root.mkdir(parents=True, exist_ok=True)
    if args.runner == "docker":
        pipeline_root.chmod(0o777)   # the steps run as the image's non-root user and write here

    from kfp import local

    runner = (local.DockerRunner(network_mode=args.docker_network) if args.runner == "docker"
              else local.SubprocessRunner(use_venv=False))
    local.init(runner=runner, pipeline_root=str(pipeline_root))
    credentials = {k: os.environ[k] for k in CREDENTIAL_ENV if os.environ.get(k)}
    patch = docker_steps(credentials) if args.runner == "docker" else contextlib.nullcontext()
    try:
        with patch, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # "non-Python base image": it is the project's image
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner")   # GPU requests
            task = mod.build_pipeline(options)(**arguments)
    except RuntimeError as exc:   # kfp.local: "Pipeline skdd finished with status FAILURE. Inner task failed: ..."
        raise SkddError(ANSI_ESCAPE.sub("", one_line(exc))) from None
    report = task.output
    print(json.dumps({"runner": args.runner, "image": image, "pipeline_root": str(pipeline_root),
                      "report": report.path, "report_uri": report.metadata.get("uri")}))
    return 0
