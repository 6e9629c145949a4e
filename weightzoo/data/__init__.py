"""Task datasets (packaged images, synthetic regression, local file formats) and corruptions."""

from .corruptions import (
    AUGMENTATIONS,
    augment_batch,
    corrupt_labels,
    prepare_task,
    shuffle_pixels,
    subsample_classes,
)
from .datasets import DATASET_NAMES, TaskData, load_dataset, split_indices

__all__ = [
    "AUGMENTATIONS",
    "DATASET_NAMES",
    "TaskData",
    "augment_batch",
    "corrupt_labels",
    "load_dataset",
    "prepare_task",
    "shuffle_pixels",
    "split_indices",
    "subsample_classes",
]
