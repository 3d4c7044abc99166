"""trainable/model.py: the original CNN, exactly, for every activation."""

import pytest

from trainable.model import build_model, resolve_initializer


@pytest.mark.parametrize("activation", ["relu", "selu", "elu", "gelu", "swish"])
def test_original_cnn_has_42442_parameters(activation):
    model = build_model(activation, kernel_initializer="glorot_uniform")
    assert model.count_params() == 42_442
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense"]
    assert model.layers[0].activation.__name__ in (activation, "silu")


@pytest.mark.parametrize("activation, expected", [
    ("relu", "he_normal"), ("elu", "he_normal"), ("gelu", "he_normal"), ("swish", "he_normal"),
    ("leaky_relu", "he_normal"), ("selu", "lecun_normal"), ("tanh", "glorot_uniform"),
])
def test_auto_initializer_is_each_activations_recommended_one(activation, expected):
    assert resolve_initializer(activation, "auto") == expected
    assert resolve_initializer(activation) == expected


def test_explicit_initializer_wins_and_reaches_every_layer():
    assert resolve_initializer("selu", "glorot_uniform") == "glorot_uniform"
    assert resolve_initializer("relu", "lecun_normal") == "lecun_normal"
    with pytest.raises(ValueError, match="unknown kernel_initializer"):
        resolve_initializer("relu", "he")
    for activation, cls in [("selu", "LecunNormal"), ("relu", "HeNormal"), ("tanh", "GlorotUniform")]:
        model = build_model(activation)
        kernels = [type(layer.kernel_initializer).__name__ for layer in model.layers
                   if hasattr(layer, "kernel_initializer")]
        assert kernels == [cls] * 3, (activation, kernels)


def test_dropout_is_alpha_dropout_for_selu_and_keeps_param_count():
    selu = build_model("selu", dropout=0.1)
    relu = build_model("relu", dropout=0.1)
    assert "AlphaDropout" in [type(layer).__name__ for layer in selu.layers]
    assert "Dropout" in [type(layer).__name__ for layer in relu.layers]
    assert selu.count_params() == relu.count_params() == 42_442


def test_same_seed_gives_same_weights():
    a, b = build_model("relu", seed=7), build_model("relu", seed=7)
    assert all((wa == wb).all() for wa, wb in zip(a.get_weights(), b.get_weights()))


@pytest.mark.parametrize("kwargs, message", [
    ({"activation": "sigmoidish"}, "unknown activation"),
    ({"kernel_initializer": "zeros_please"}, "unknown kernel_initializer"),
    ({"dropout": 1.0}, "dropout"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(**kwargs)
