"""`skdd ingest` as a component: the dataset source to Parquet shards plus a manifest."""

from kfp.dsl import Dataset, Output


def ingest(dataset: Output[Dataset], params_yaml: str, artifact_root: str, source_fingerprint: str,
           source: str = "", location: str = "", name: str = "", s3_endpoint_url: str = ""):
    """Read the dataset source into Parquet shards (skdd ingest); keyed on the source's content hash."""
    from skdd.kfp_steps import run_step

    run_step("ingest", {"manifest.json": dataset}, params_yaml=params_yaml, artifact_root=artifact_root,
             options={"source": source, "location": location, "name": name}, key_extra=source_fingerprint,
             s3_endpoint_url=s3_endpoint_url)
