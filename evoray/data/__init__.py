"""Datasets, splits and batched, seeded augmentation: scikit-learn's digits (the embedded default), CIFAR-10/100,
ImageNet folders and image arrays in .npz files.

Example::

    from evoray.data import DataConfig, build_data

    splits = build_data(DataConfig(dataset="digits"), seed=0, split="search")
    for epoch in range(2):
        splits.train.set_epoch(epoch)
        for images, labels in splits.train: ...
"""

from evoray.data.config import DATASETS, DataConfig
from evoray.data.datasets import DataShape, DataSplits, build_data, describe, require_files
from evoray.data.sources import BatchSource, TensorSource

__all__ = [
    "DATASETS",
    "BatchSource",
    "DataConfig",
    "DataShape",
    "DataSplits",
    "TensorSource",
    "build_data",
    "describe",
    "require_files",
]
