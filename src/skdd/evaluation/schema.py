"""The shape of an evaluation's `metrics.json`, as types: what `skdd report`, the benchmarks and users' scripts
read. `tests/test_evaluate.py` checks a real strict and dim run against these keys, so the description cannot
drift from the file again. Accuracies are percent; std is the population std over trials (`STD_KIND`).
"""

from __future__ import annotations

from typing import TypedDict

METRICS_SCHEMA = "skdd.evaluation/1"


class Trial(TypedDict):
    trial: int                  # 0-based trial index
    seed: int                   # seed + trial: model init, shuffling, augmentation (dim: noise and labels too)
    accuracy: float             # strict: the final model's test accuracy; dim: the best check (chosen on test)
    train_loss: float           # mean cross-entropy of the last epoch
    wall_seconds: float


class DimTrial(Trial):
    checks: list[list[float]]   # [epoch, accuracy] at each test check
    best_epoch: int
    final_accuracy: float       # the last check's accuracy (what a no-peeking protocol would report)
    iterations_per_epoch: int


class ArchitectureResult(TypedDict):
    accuracies: list[float]     # one per trial, in trial order
    mean: float
    std: float
    seeds: list[int]
    wall_seconds: float
    trials: list[Trial]         # DimTrial under protocol dim


class EvaluationMetrics(TypedDict):
    schema: str                 # METRICS_SCHEMA
    label: str                  # the row label in tables (skd, gan-only, random, ...)
    dataset: str
    num_classes: int
    ipc: int | None             # None: the full training set
    protocol: str               # strict | dim
    protocol_label: str         # the protocol's name in table headings
    training_set: str           # what the classifiers trained on, in words
    train_images_per_epoch_note: str
    train_images: int | None    # strict: the fixed set's size; dim: None (fresh images)
    split: str                  # the real split tested on: "test", or "val" when choosing a setting
    test_images: int            # images of that split
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    augment: str
    width: int
    checks: int | None          # dim: test checks per trial; strict: None
    trials: int
    seeds: list[int]
    device: str
    unit: str                   # "percent"
    std: str                    # STD_KIND
    wall_seconds: float
    generator_weights: str | None   # dim: "ema" or "raw" (which G was sampled); strict: None
    architectures: dict[str, ArchitectureResult]

