"""`skdd pretrain` as a component: the conditional GAN (WGAN-GP + auxiliary classifier)."""

from kfp.dsl import Dataset, Input, Model, Output


def pretrain(dataset: Input[Dataset], gan: Output[Model], params_yaml: str, artifact_root: str,
             device: str = "", s3_endpoint_url: str = ""):
    """Pretrain the conditional GAN on the dataset (skdd pretrain)."""
    from skdd.kfp_steps import run_step

    run_step("pretrain", {"manifest.json": gan}, params_yaml=params_yaml, artifact_root=artifact_root,
             inputs={"dataset": dataset}, options={"device": device}, s3_endpoint_url=s3_endpoint_url)
