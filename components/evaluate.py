"""`skdd evaluate` as a component: accuracy of classifiers trained on the synthetic set, mean ± std."""

from typing import List

from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output


def evaluate(dataset: Input[Dataset], synthetic: Input[Artifact], evaluation: Output[Metrics],
             report: Output[Markdown], params_yaml: str, artifact_root: str, loss: str = "", label: str = "",
             architectures: List[str] = [], device: str = "", s3_endpoint_url: str = ""):
    """Train classifiers on the synthetic set, test on the real test split (skdd evaluate). `synthetic` is a
    dataset (a fixed set, a real subset, the training split) or, for the DiM protocol, a generator. The row
    label is `label`, else the distill loss mode (as dvc.yaml names them)."""
    from skdd.kfp_steps import evaluation_label, run_step

    run_step("evaluate", {"metrics.json": evaluation, "report.md": report}, params_yaml=params_yaml,
             artifact_root=artifact_root, inputs={"dataset": dataset, "synthetic": synthetic},
             options={"architectures": architectures, "device": device,
                      "label": label or evaluation_label(loss, params_yaml)},
             s3_endpoint_url=s3_endpoint_url)
