"""The CNN of the original SELU-vs-ReLU experiment, in Keras 3 (any backend).

    Conv2D(32, 3x3) -> MaxPool -> Conv2D(64, 3x3) -> MaxPool -> Flatten -> Dense(10, softmax)

42,442 parameters with the default (valid) padding on 32x32x3 inputs.
"""

from __future__ import annotations

ACTIVATIONS: tuple[str, ...] = ("relu", "selu", "elu", "gelu", "swish", "tanh")
INITIALIZERS: tuple[str, ...] = ("auto", "glorot_uniform", "glorot_normal", "lecun_normal",
                                 "lecun_uniform", "he_normal", "he_uniform")


# He initialisation keeps the activations' variance for rectifier-like units (zero or small
# for negative inputs, identity-like for positive ones); LeCun normal is what SELU's
# self-normalisation assumes; Glorot suits symmetric saturating units such as tanh.
HE_FAMILY: frozenset[str] = frozenset({"relu", "leaky_relu", "elu", "gelu", "swish", "silu"})


def resolve_initializer(activation: str, kernel_initializer: str = "auto") -> str:
    """The kernel initialiser a layer with ``activation`` gets; the one place ``auto`` is decided.

    ``auto`` gives each activation its recommended initialiser: ``he_normal`` for the ReLU
    family (``HE_FAMILY``: relu, leaky_relu, elu, gelu, swish), ``lecun_normal`` for selu (what
    the SELU paper requires), ``glorot_uniform`` otherwise (tanh). An explicit name from
    ``INITIALIZERS`` is returned unchanged; every layer of the CNN, the softmax output included,
    uses the resolved initialiser.
    """
    if kernel_initializer not in INITIALIZERS:
        raise ValueError(f"unknown kernel_initializer {kernel_initializer!r}; use one of {INITIALIZERS}")
    if kernel_initializer != "auto":
        return kernel_initializer
    if activation == "selu":
        return "lecun_normal"
    return "he_normal" if activation in HE_FAMILY else "glorot_uniform"


def build_model(activation: str = "relu", kernel_initializer: str = "auto", dropout: float = 0.0,
                input_shape: tuple[int, int, int] = (32, 32, 3), num_classes: int = 10,
                seed: int | None = None):
    """Return the (uncompiled) original CNN with the given activation.

    ``dropout`` > 0 inserts dropout after each pooling layer; for selu it is AlphaDropout,
    which keeps SELU's self-normalising mean and variance. ``seed`` makes the kernel
    initialisation and dropout masks reproducible.
    """
    import keras

    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; use one of {ACTIVATIONS}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    init_name = resolve_initializer(activation, kernel_initializer)

    def init(offset: int):
        return keras.initializers.get({"class_name": init_name,
                                       "config": {"seed": None if seed is None else seed + offset}})

    def drop(offset: int):
        layer = keras.layers.AlphaDropout if activation == "selu" else keras.layers.Dropout
        return [layer(dropout, seed=None if seed is None else seed + offset)] if dropout else []

    return keras.Sequential([
        keras.Input(shape=input_shape),
        keras.layers.Conv2D(32, (3, 3), activation=activation, kernel_initializer=init(0)),
        keras.layers.MaxPooling2D((2, 2)),
        *drop(10),
        keras.layers.Conv2D(64, (3, 3), activation=activation, kernel_initializer=init(1)),
        keras.layers.MaxPooling2D((2, 2)),
        *drop(11),
        keras.layers.Flatten(),
        keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=init(2)),
    ], name=f"cnn_{activation}")
