"""`skdd pool` as a component: the pool architectures' training trajectories, for distill's pool_source trajectories."""

from kfp.dsl import Dataset, Input, Model, Output


def pool(dataset: Input[Dataset], trajectories: Output[Model], params_yaml: str, artifact_root: str,
         device: str = "", s3_endpoint_url: str = ""):
    """Record the pool's snapshots (skdd pool)."""
    from skdd.kfp_steps import run_step

    run_step("pool", {"manifest.json": trajectories}, params_yaml=params_yaml, artifact_root=artifact_root,
             inputs={"dataset": dataset}, options={"device": device}, s3_endpoint_url=s3_endpoint_url)
