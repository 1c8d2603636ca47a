"""`skdd distill` as a component: the generator fine-tuned with L_CGAN + λ·τ²·L_SKD (the GPU stage)."""

from kfp.dsl import Dataset, Input, Model, Output


def distill(dataset: Input[Dataset], gan: Input[Model], teacher: Input[Model], generator: Output[Model],
            params_yaml: str, artifact_root: str, trajectories: Input[Model] = None, loss: str = "",
            device: str = "", s3_endpoint_url: str = ""):
    """Distill the pretrained GAN against the model pool (skdd distill; the trajectories, when given, are read only
    with pool_source trajectories)."""
    from skdd.kfp_steps import run_step

    run_step("distill", {"manifest.json": generator}, params_yaml=params_yaml, artifact_root=artifact_root,
             inputs={"dataset": dataset, "gan": gan, "teacher": teacher, "pool": trajectories},
             options={"loss": loss, "device": device},
             s3_endpoint_url=s3_endpoint_url)
