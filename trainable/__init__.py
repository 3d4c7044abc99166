"""CIFAR-10 data, the original CNN, and the Ray Tune trainable that trains it."""

from trainable.data import (
    CLASS_NAMES,
    NORMALIZATIONS,
    DataError,
    Dataset,
    load_cifar10,
    make_dataset,
    normalize,
    resolve_data_dir,
    stratified_split,
    synthetic_cifar10,
)
from trainable.model import ACTIVATIONS, INITIALIZERS, build_model, resolve_initializer
from trainable.train import DEFAULTS, METRICS, train_cnn

__all__ = [
    "ACTIVATIONS", "CLASS_NAMES", "DEFAULTS", "INITIALIZERS", "METRICS", "NORMALIZATIONS",
    "DataError", "Dataset", "build_model", "load_cifar10", "make_dataset", "normalize",
    "resolve_data_dir", "resolve_initializer", "stratified_split", "synthetic_cifar10", "train_cnn",
]
