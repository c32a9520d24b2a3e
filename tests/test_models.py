"""Model builders: parameter counts, static batch-1 variant, only Edge-TPU-friendly layers."""

import pytest

import convert  # noqa: F401
from convert.models import MODELS, build_model, with_batch_size_one
from edge.errors import FerEdgeError

ALLOWED = {"InputLayer", "Conv2D", "SeparableConv2D", "BatchNormalization", "ReLU", "MaxPooling2D", "Add",
           "GlobalAveragePooling2D", "Dropout", "Dense", "Softmax"}


def test_mini_xception_matches_the_paper_size():
    m = build_model("mini_xception")
    assert m.count_params() == 58423  # Arriaga et al. 2017 report ~58k
    assert m.input_shape == (None, 48, 48, 1) and m.output_shape == (None, 7)


@pytest.mark.parametrize("name,lo,hi", [("tiny", 40_000, 60_000), ("standard", 500_000, 2_000_000)])
def test_variant_sizes(name, lo, hi):
    assert lo <= build_model(name).count_params() <= hi


@pytest.mark.parametrize("name", sorted(MODELS))
def test_layers_lower_to_edgetpu_ops(name):
    m = build_model(name)
    assert {type(layer).__name__ for layer in m.layers} <= ALLOWED


def test_batch_one_copy_keeps_weights():
    m = build_model("mini_xception")
    static = with_batch_size_one(m, "mini_xception")
    assert static.input_shape == (1, 48, 48, 1)
    for a, b in zip(m.get_weights(), static.get_weights()):
        assert (a == b).all()


def test_unknown_model():
    with pytest.raises(FerEdgeError, match="unknown model"):
        build_model("resnet9000")
