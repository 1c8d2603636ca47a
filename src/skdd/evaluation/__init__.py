"""Evaluation core: the strict DC/DSA and DiM training protocols, and the coreset baselines."""

from skdd.evaluation.protocols import (
    DIM_AUGMENT,
    TrainConfig,
    checkpoint_kwargs,
    clone_snapshot,
    dim_check_epochs,
    dim_iterations_per_epoch,
    evaluate_accuracy,
    lr_for_epoch,
    snapshot_from_checkpoint,
    train_dim,
    train_strict,
)
from skdd.evaluation.selection import (
    METHODS,
    extract_features,
    herding,
    k_center,
    random_subset,
    select_per_class,
)

__all__ = [
    "DIM_AUGMENT", "METHODS", "TrainConfig", "checkpoint_kwargs", "clone_snapshot", "dim_check_epochs",
    "dim_iterations_per_epoch", "evaluate_accuracy", "extract_features", "herding", "k_center", "lr_for_epoch",
    "random_subset", "select_per_class", "snapshot_from_checkpoint", "train_dim", "train_strict",
]
