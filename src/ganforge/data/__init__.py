"""One LightningDataModule per dataset, all on the in-memory base in `base.py`."""

from ganforge.data.base import InMemoryDataModule, to_float, to_uint8
from ganforge.data.cifar import CIFAR10DataModule
from ganforge.data.image_folder import ImageFolderDataModule
from ganforge.data.mnist import FashionMNISTDataModule, MNIST5kDataModule, MNISTDataModule
from ganforge.data.stacked_mnist import StackedMNISTDataModule
from ganforge.data.toy import ToyDataModule, ToyGridDataModule, ToyRingDataModule

__all__ = [
    "CIFAR10DataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "InMemoryDataModule",
    "MNIST5kDataModule",
    "MNISTDataModule",
    "StackedMNISTDataModule",
    "ToyDataModule",
    "ToyGridDataModule",
    "ToyRingDataModule",
    "to_float",
    "to_uint8",
]
