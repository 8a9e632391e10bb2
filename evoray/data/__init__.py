"""Datasets, splits and augmentation: scikit-learn's digits (the embedded default), CIFAR-10/100, ImageNet folders,
and image arrays in .npz files."""

from evoray.data.sources import DATASETS, BatchSource, DataConfig, DataSplits, TensorSource, build_data

__all__ = ["DATASETS", "BatchSource", "DataConfig", "DataSplits", "TensorSource", "build_data"]
