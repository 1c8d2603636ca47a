"""`skdd refine` as a component: the fixed set distribution-matched through the frozen generator (a GPU stage)."""

from kfp.dsl import Dataset, Input, Model, Output


def refine(dataset: Input[Dataset], synthetic: Input[Dataset], generator: Input[Model], refined: Output[Dataset],
           params_yaml: str, artifact_root: str, device: str = "", s3_endpoint_url: str = ""):
    """Refine the set's latent codes (or pixels) by distribution matching (skdd refine)."""
    from skdd.kfp_steps import run_step

    run_step("refine", {"manifest.json": refined}, params_yaml=params_yaml, artifact_root=artifact_root,
             inputs={"dataset": dataset, "synthetic": synthetic, "gan": generator}, options={"device": device},
             s3_endpoint_url=s3_endpoint_url)
