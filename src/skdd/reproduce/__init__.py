"""Reproducing the paper's tables: the preset's matrix (`matrix`), the paper's numbers (`paper`), the results page
(`page`) and the results JSON built from what the stages recorded (`results`). Read by `benchmarks/reproduce.py`
and by the `skdd-reproduce` Kubeflow pipeline, so both plan and report a preset the same way."""
