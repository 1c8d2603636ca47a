"""The reproduction pipeline's fan-in: evaluations gathered group by group, then one results page.

Not stages (nothing is trained or written to the artifact store): `collect_evaluations` turns one fan-out group's
evaluations (a `dsl.Collected` list) into records, appended to the records of the groups before it, and
`reproduce_results` joins the records with the matrix fixed at compile time into the results JSON and page
that `benchmarks/reproduce.py` writes.
"""

from typing import List

from kfp.dsl import Artifact, Input, Markdown, Metrics, Output


def collect_evaluations(evaluations: Input[List[Metrics]], records: Output[Artifact], dataset: str,
                        previous: Input[Artifact] = None, s3_endpoint_url: str = ""):
    """Records of this group's evaluations (metrics and the stages behind them), after `previous`'s."""
    import json
    import os
    from pathlib import Path

    from skdd.kfp_steps import reported
    from skdd.reproduce.results import records_of

    if s3_endpoint_url:
        os.environ["SKDD_S3_ENDPOINT_URL"] = s3_endpoint_url
    with reported("collect"):
        before = json.loads(Path(previous.path).read_text()) if previous is not None else []
        rows = before + records_of(list(evaluations), dataset)
    Path(records.path).parent.mkdir(parents=True, exist_ok=True)
    Path(records.path).write_text(json.dumps(rows, indent=1))
    records.metadata["evaluations"] = len(rows)


def reproduce_results(records: Input[Artifact], results: Output[Artifact], page: Output[Markdown], matrix: str):
    """The results JSON (schema skdd.reproduce/1) and its docs/results.md section, shown in the run's UI."""
    import json
    from pathlib import Path

    from skdd.reproduce.page import render_section
    from skdd.reproduce.results import assemble

    doc = assemble(json.loads(matrix), json.loads(Path(records.path).read_text()))
    for artifact, text in ((results, json.dumps(doc, indent=2) + "\n"), (page, render_section(doc))):
        Path(artifact.path).parent.mkdir(parents=True, exist_ok=True)
        Path(artifact.path).write_text(text)
    done = sum(1 for c in doc["cells"] if c["status"] == "done")
    results.metadata.update(preset=doc["preset"], cells=len(doc["cells"]), done=done)
