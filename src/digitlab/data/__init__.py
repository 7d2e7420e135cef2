"""Datasets as uint8 tensors: the IDX reader and registry, fetching with checksums, batched augmentation."""

from .augment import AugmentConfig, augment_batch
from .datasets import (
    BatchLoader,
    Dataset,
    DatasetInfo,
    Split,
    dataset_info,
    list_datasets,
    load_dataset,
    read_idx,
    register_dataset,
    to_float,
)
from .fetch import data_root, fetch

__all__ = [
    "AugmentConfig",
    "BatchLoader",
    "Dataset",
    "DatasetInfo",
    "Split",
    "augment_batch",
    "data_root",
    "dataset_info",
    "fetch",
    "list_datasets",
    "load_dataset",
    "read_idx",
    "register_dataset",
    "to_float",
]
