"""CIFAR-10 data, the original CNN, and the Ray Tune trainable that trains it."""

from trainable.cifar10 import (
    CLASS_NAMES,
    Cifar10Copy,
    DataError,
    DataWarning,
    dataset_digest,
    load_cifar10,
    read_cifar10,
    resolve_data_dir,
)
from trainable.dataset import (
    NORMALIZATIONS,
    Dataset,
    make_dataset,
    normalize,
    stratified_split,
    synthetic_cifar10,
)
from trainable.model import ACTIVATIONS, INITIALIZERS, build_model, resolve_initializer
from trainable.train import DEFAULTS, METRICS, train_cnn

__all__ = [
    "ACTIVATIONS", "CLASS_NAMES", "DEFAULTS", "INITIALIZERS", "METRICS", "NORMALIZATIONS",
    "Cifar10Copy", "DataError", "DataWarning", "Dataset", "build_model", "dataset_digest", "load_cifar10",
    "make_dataset", "normalize", "read_cifar10", "resolve_data_dir", "resolve_initializer",
    "stratified_split", "synthetic_cifar10", "train_cnn",
]
