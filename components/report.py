"""`skdd report` as a component: every IPC's evaluation in one comparison table."""

from typing import List

from kfp.dsl import Input, Markdown, Metrics, Output


def report(evaluations: Input[List[Metrics]], comparison: Output[Markdown], params_yaml: str, artifact_root: str,
           s3_endpoint_url: str = ""):
    """Merge the evaluations into one table (skdd report)."""
    from skdd.kfp_steps import artifact_uri, run_step

    uris = [artifact_uri(e, f"evaluations[{i}]") for i, e in enumerate(evaluations)]
    run_step("report", {"report.md": comparison}, params_yaml=params_yaml, artifact_root=artifact_root,
             options={"evaluations": uris}, s3_endpoint_url=s3_endpoint_url)
