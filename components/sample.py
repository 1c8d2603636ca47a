"""`skdd sample` as a component: a fixed synthetic set of IPC images per class, kept by the teacher."""

from kfp.dsl import Dataset, Input, Model, Output


def sample(generator: Input[Model], teacher: Input[Model], synthetic: Output[Dataset], params_yaml: str,
           artifact_root: str, ipc: int, device: str = "", s3_endpoint_url: str = ""):
    """Over-generate and keep IPC images per class from the generator (skdd sample)."""
    from skdd.kfp_steps import run_step

    run_step("sample", {"manifest.json": synthetic}, params_yaml=params_yaml, artifact_root=artifact_root,
             inputs={"gan": generator, "teacher": teacher}, options={"ipc": ipc, "device": device},
             s3_endpoint_url=s3_endpoint_url)
