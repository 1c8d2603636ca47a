"""`skdd select` as a component: a baseline subset of the real training split (random, herding, k-center)."""

from kfp.dsl import Dataset, Input, Model, Output


def select(dataset: Input[Dataset], teacher: Input[Model], subset: Output[Dataset], params_yaml: str,
           artifact_root: str, device: str = "", s3_endpoint_url: str = ""):
    """Pick IPC real images per class (skdd select; herding and k-center in the teacher's feature space, random
    reads no teacher)."""
    from skdd.kfp_steps import run_step

    run_step("select", {"manifest.json": subset}, params_yaml=params_yaml, artifact_root=artifact_root,
             inputs={"dataset": dataset, "teacher": teacher}, options={"device": device},
             s3_endpoint_url=s3_endpoint_url)
