"""`skdd teacher` as a component: the classifier selection and baselines use, trained on the real training split."""

from kfp.dsl import Dataset, Input, Model, Output


def teacher(dataset: Input[Dataset], classifier: Output[Model], params_yaml: str, artifact_root: str,
            device: str = "", s3_endpoint_url: str = ""):
    """Train the teacher classifier (skdd teacher)."""
    from skdd.kfp_steps import run_step

    run_step("teacher", {"manifest.json": classifier}, params_yaml=params_yaml, artifact_root=artifact_root,
             inputs={"dataset": dataset}, options={"device": device}, s3_endpoint_url=s3_endpoint_url)
