"""`skdd sample` as a component: a fixed synthetic set of IPC images per class."""

from kfp.dsl import Dataset, Input, Model, Output


def sample(generator: Input[Model], synthetic: Output[Dataset], params_yaml: str, artifact_root: str, ipc: int,
           device: str = "", s3_endpoint_url: str = ""):
    """Sample IPC images per class from the generator (skdd sample)."""
    from skdd.kfp_steps import run_step

    run_step("sample", {"manifest.json": synthetic}, params_yaml=params_yaml, artifact_root=artifact_root,
             inputs={"gan": generator}, options={"ipc": ipc, "device": device}, s3_endpoint_url=s3_endpoint_url)
