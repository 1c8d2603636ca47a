"""The skdd Kubeflow pipeline (`skdd_pipeline.py`) and its compiled IR YAML (`skdd_pipeline.yaml`).

Regenerate the committed YAML with `skdd pipeline compile --output pipelines/skdd_pipeline.yaml`.
"""
