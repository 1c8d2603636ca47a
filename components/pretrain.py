"""`skdd pretrain` as a component: the conditional GAN (the teacher feeds its quality probe)."""

from kfp.dsl import Dataset, Input, Model, Output


def pretrain(dataset: Input[Dataset], teacher: Input[Model], gan: Output[Model], params_yaml: str, artifact_root: str,
             device: str = "", s3_endpoint_url: str = ""):
    """Pretrain the conditional GAN on the dataset (skdd pretrain)."""
    from skdd.kfp_steps import run_step

    run_step("pretrain", {"manifest.json": gan}, params_yaml=params_yaml, artifact_root=artifact_root,
             inputs={"dataset": dataset, "teacher": teacher}, options={"device": device}, s3_endpoint_url=s3_endpoint_url)
