"""What data a run reads and how it is split, augmented and batched."""

from __future__ import annotations

from dataclasses import dataclass, field

from evoray.errors import ConfigError

DATASETS = ("digits", "cifar10", "cifar100", "imagenet", "npz")


@dataclass
class DataConfig:
    """The ``data`` section of a run's config.

    Example::

        cfg = DataConfig(dataset="npz", root="train.npz", test_root="test.npz", cutout=16)
        splits = build_data(cfg, seed=0, split="search")
    """

    dataset: str = field(default="digits", metadata={"choices": DATASETS})  # which loader: one of DATASETS
    root: str = ""  # dataset directory (cifar10/cifar100/imagenet) or the .npz file of the training split (npz)
    test_root: str = ""  # npz only: .npz file of the test split ("" = hold out test_portion of root)
    download: bool = False  # cifar only: let torchvision download into root
    image_size: int = field(default=0, metadata={"min": 0})  # resize to this side (0 = native: 8, 32 or 224)
    # search split: the share of the training set for the weights; the rest is the validation half. 1.0: all of it
    # for the weights and the test set as validation, as single-level SNAS is searched
    train_portion: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    test_portion: float = field(default=0.2, metadata={"min": 0.0, "max": 1.0})  # digits/npz: held-out test share
    cutout: int = field(default=0, metadata={"min": 0})  # side of the square cut out of training images (0 = off)
    augment: bool = True  # training only: random crop (pad side//8) + horizontal flip (no flips on digits)
    batch_size: int = field(default=64, metadata={"min": 1})  # training and validation batch
    eval_batch_size: int = field(default=256, metadata={"min": 1})  # test batch
    num_workers: int = field(default=0, metadata={"min": 0})  # ImageNet folder loader processes (0 = in-process)
    limit_train: int = field(default=0, metadata={"min": 0})  # keep at most this many training images (0 = all)
    limit_test: int = field(default=0, metadata={"min": 0})  # keep at most this many test images (0 = all)

    def validate(self) -> None:
        """Raise ConfigError for an unknown dataset, a portion outside its range or a negative count."""
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; valid: {', '.join(DATASETS)}")
        if not 0.0 < self.train_portion <= 1.0:
            raise ConfigError(f"data.train_portion = {self.train_portion} must lie in (0, 1]")
        if not 0.0 < self.test_portion < 1.0:
            raise ConfigError(f"data.test_portion = {self.test_portion} must lie strictly between 0 and 1")
        for name in ("image_size", "cutout", "num_workers", "limit_train", "limit_test"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name} = {getattr(self, name)} must be >= 0")
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"data.{name} = {getattr(self, name)} must be >= 1")
        if self.dataset in ("npz", "imagenet") and not self.root:
            what = "the training .npz file" if self.dataset == "npz" else "the folder holding train/ and val/"
            raise ConfigError(f"data.dataset={self.dataset} needs data.root, {what}")

    @property
    def whole_train(self) -> bool:
        """Whether a search split keeps every training image for the weights and validates on the test set."""
        return self.train_portion >= 1.0

    def require_validation_half(self, who: str) -> None:
        """Raise ConfigError when ``train_portion`` leaves ``who`` (a reader of the validation half) without one."""
        if self.whole_train:
            raise ConfigError(
                f"data.train_portion = {self.train_portion} leaves {who} no validation half; it must be < 1 "
                "(1 is for single-level searches, which validate on the test set)"
            )
