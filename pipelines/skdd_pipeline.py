"""The skdd Kubeflow pipeline: ingest → teacher → pretrain → distill → (per IPC) sample → refine → evaluate →
report.

The graph mirrors dvc.yaml's main chain, stage for stage, through the same `run_stage` calls. What is
fixed when compiling (`PipelineOptions`, the flags of `skdd pipeline compile`): the image, which stages get
a GPU and where they may schedule (node selector, tolerations), the Kubernetes Secret the S3 credentials
come from, and the default preset text. What is chosen per run (pipeline parameters):

  artifact_root     where skdd artifacts go: s3://bucket/prefix on a cluster (a local folder under kfp.local);
                    each lands at {artifact_root}/{stage}/{content key}, so manifests name resolvable parents
  params_yaml       the full params file text (a preset: params.yaml, params/*.yaml); default: the compile-time
                    preset, as one line of flow-style YAML
  dataset_source    ingest.source   ("" = as the preset says; likewise every empty string / empty list below)
  dataset_location  ingest.location (a folder, file or s3:// prefix; torchvision: the download folder)
  dataset_name      ingest.name
  ipc_list          images per class: one sample + evaluate per entry (default: the preset's sample.ipc)
  loss              distill.loss: skd | skd-nostand | dim-mse | gan-only (the control: no matching term)
  architectures     evaluate.architectures
  device            the device param of pretrain, distill, sample, evaluate (auto | cpu | cuda)
  s3_endpoint_url   an S3-compatible endpoint (SKDD_S3_ENDPOINT_URL); not a secret

A failed task is retried (`retries`, default 2, with exponential backoff). Every stage is safe to retry: its
output is content-keyed, a complete one is reused, and pretrain, distill and evaluate mirror their checkpoints
to `{output}.partial/checkpoints/` in the bucket, so a pod that lost its node resumes where the last one stopped.

Credentials are never parameters: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY enter every task as environment
variables from the Secret. Caching is on for every stage (each is deterministic given its inputs); ingest also
takes the source's content hash from `fingerprint_source` (never cached), so changed data is never served
from cache. Every task gets SKDD_IMAGE (recorded in manifests) and SKDD_RUN_ID (the run's id, from the pod's
`pipeline/runid` label: an environment variable, not an input, so it does not defeat the cache).
"""


from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import yaml

from skdd.lineage import SIGNING_KEY_ENV
from skdd.pipeline_cli import DEFAULT_GPU_STAGES, GPU_CAPABLE, preset_ipcs

PIPELINE_NAME = "skdd"
DEFAULT_SECRET = "skdd-s3-credentials"
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
DEFAULT_ARTIFACT_ROOT = "s3://skdd/artifacts"
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_NODE_SELECTOR = ("nvidia.com/gpu.present", "true")
RUN_ID_FIELD = "metadata.labels['pipeline/runid']"
COMPILED = Path(__file__).with_name("skdd_pipeline.yaml")
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class Toleration:
    key: str
    effect: str
    value: str | None = None   # None: operator Exists

    @property
    def operator(self) -> str:
        return "Exists" if self.value is None else "Equal"

    @classmethod
    def parse(cls, text: str) -> "Toleration":
        """`key[=value]:effect`, e.g. `nvidia.com/gpu:NoSchedule` (Exists) or `dedicated=gpu:NoSchedule`."""
        spec, sep, effect = text.rpartition(":")
        if not sep or not spec or effect not in EFFECTS:
            raise ValueError(f"toleration {text!r}: expected key[=value]:effect with effect one of {', '.join(EFFECTS)}")
        key, eq, value = spec.partition("=")
        if not key or (eq and not value):
            raise ValueError(f"toleration {text!r}: empty key or value")
        return cls(key=key, effect=effect, value=value if eq else None)


DEFAULT_TOLERATIONS = (Toleration(GPU_RESOURCE, "NoSchedule"),)


@dataclass(frozen=True)
class PipelineOptions:
    image: str
    params_yaml: str
    gpu_stages: tuple[str, ...] = DEFAULT_GPU_STAGES
    gpu_count: int = 1
    node_selector: tuple[tuple[str, str], ...] = (DEFAULT_NODE_SELECTOR,)
    tolerations: tuple[Toleration, ...] = DEFAULT_TOLERATIONS
    secret_name: str = DEFAULT_SECRET
    signing_secret: str | None = None                # a Secret with SKDD_SIGNING_KEY: every manifest gets signed
    artifact_root: str = DEFAULT_ARTIFACT_ROOT
    ipc_list: tuple[int, ...] = field(default=())   # empty: the preset's sample.ipc
    retries: int = 2                                 # per task: a preempted pod's retry resumes from S3 checkpoints
    retry_backoff: str = "60s"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.gpu_stages) - set(GPU_CAPABLE))
        if unknown:
            raise ValueError(f"GPU stage {unknown[0]!r}: choose from {', '.join(GPU_CAPABLE)}")
        if self.gpu_count < 1:
            raise ValueError("GPU count must be at least 1")
        if not self.secret_name:
            raise ValueError("the S3 credentials secret needs a name")
        if self.retries < 0:
            raise ValueError("retries must be 0 or more")


def one_line_params(params_yaml: str) -> str:
    """The preset as one line of flow-style YAML (it loads to exactly the same values).

    The compiled YAML's header lists each parameter's default in a comment, and KFP comments only the first
    line of a multi-line default: a preset's text verbatim would break the file for every YAML reader."""
    data = yaml.safe_load(params_yaml) or {}
    return yaml.safe_dump(data, default_flow_style=True, sort_keys=False, width=float("inf"),
                          allow_unicode=False).strip()


def apply_platform(task, stage: str, options: PipelineOptions, cache: bool = True):
    """What every task gets on a cluster: caching, retries, the image and run id in its environment, the S3
    credentials from the Secret, and for GPU stages the accelerator, node selector and tolerations."""
    from kfp import kubernetes

    task.set_caching_options(cache)
    if options.retries:
        task.set_retry(num_retries=options.retries, backoff_duration=options.retry_backoff, backoff_factor=2.0)
    task.set_env_variable("SKDD_IMAGE", options.image)
    kubernetes.use_secret_as_env(task, secret_name=options.secret_name,
                                 secret_key_to_env={key: key for key in SECRET_KEYS})
    kubernetes.use_field_path_as_env(task, env_name="SKDD_RUN_ID", field_path=RUN_ID_FIELD)
    if options.signing_secret:
        kubernetes.use_secret_as_env(task, secret_name=options.signing_secret,
                                     secret_key_to_env={SIGNING_KEY_ENV: SIGNING_KEY_ENV})
    if stage in options.gpu_stages:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(options.gpu_count)
        for label_key, label_value in options.node_selector:
            kubernetes.add_node_selector(task, label_key=label_key, label_value=label_value)
        for t in options.tolerations:
            kubernetes.add_toleration(task, key=t.key, operator=t.operator, value=t.value, effect=t.effect)
    return task


def build_pipeline(options: PipelineOptions):
    """The pipeline function for these compile-time options (call it under kfp.local, or compile it)."""
    from kfp import dsl
    from kfp.dsl import Markdown

    from components import make_components

    c = make_components(options.image)
    default_ipcs = list(options.ipc_list) or preset_ipcs(options.params_yaml)

    def platform(task, stage: str, cache: bool = True):
        return apply_platform(task, stage, options, cache)

    @dsl.pipeline(name=PIPELINE_NAME, description="Generative dataset distillation with self-knowledge "
                  "distillation: ingest, teacher, pretrain, pool trajectories, distill (GPU), then per IPC sample "
                  "(kept by the teacher), "
                  "refine (GPU) and evaluate, and report.")
    def skdd_pipeline(
        artifact_root: str = options.artifact_root,
        params_yaml: str = one_line_params(options.params_yaml),
        dataset_source: str = "",
        dataset_location: str = "",
        dataset_name: str = "",
        ipc_list: List[int] = default_ipcs,
        loss: str = "",
        architectures: List[str] = [],
        device: str = "",
        s3_endpoint_url: str = "",
    ) -> Markdown:
        common = dict(params_yaml=params_yaml, artifact_root=artifact_root, s3_endpoint_url=s3_endpoint_url)
        source = dict(source=dataset_source, location=dataset_location, name=dataset_name)
        fingerprint = platform(c.fingerprint_source(params_yaml=params_yaml, s3_endpoint_url=s3_endpoint_url,
                                                    **source), "fingerprint", cache=False)
        data = platform(c.ingest(source_fingerprint=fingerprint.output, **source, **common), "ingest")
        classifier = platform(c.teacher(dataset=data.outputs["dataset"], device=device, **common), "teacher")
        gan = platform(c.pretrain(dataset=data.outputs["dataset"], teacher=classifier.outputs["classifier"],
                                  device=device, **common), "pretrain")
        trajectories = platform(c.pool(dataset=data.outputs["dataset"], device=device, **common), "pool")
        distilled = platform(c.distill(dataset=data.outputs["dataset"], gan=gan.outputs["gan"],
                                       teacher=classifier.outputs["classifier"],
                                       trajectories=trajectories.outputs["trajectories"], loss=loss, device=device,
                                       **common), "distill")
        with dsl.ParallelFor(ipc_list, name="per-ipc") as ipc:
            synthetic = platform(c.sample(generator=distilled.outputs["generator"],
                                          teacher=classifier.outputs["classifier"], ipc=ipc, device=device,
                                          **common), "sample")
            refined = platform(c.refine(dataset=data.outputs["dataset"], synthetic=synthetic.outputs["synthetic"],
                                        generator=distilled.outputs["generator"], device=device, **common), "refine")
            evaluation = platform(c.evaluate(dataset=data.outputs["dataset"],
                                             synthetic=refined.outputs["refined"], loss=loss,
                                             architectures=architectures, device=device, **common), "evaluate")
        report = platform(c.report(evaluations=dsl.Collected(evaluation.outputs["evaluation"]), **common), "report")
        return report.outputs["comparison"]

    return skdd_pipeline


def compile_pipeline(options: PipelineOptions, package_path: str | Path) -> Path:
    """Write the IR YAML (pipeline spec + Kubernetes platform spec); deterministic for the same options."""
    from kfp import compiler

    path = Path(package_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(options), str(path))
    return path
