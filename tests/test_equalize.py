"""Graph rewrites applied before int8 calibration (convert/equalize.py): each must leave the float
function unchanged and do what it is for (exact pixel - 128 input, equal channel ranges, no
depthwise op left), and the converted model must still be all-int8 and Edge-TPU-clean."""

import numpy as np
import pytest

import convert  # noqa: F401
from convert.equalize import (batch_norm_as_depthwise, consumers, equalize_relu_channels,
                              equalize_residual_channels, expand_separable, fold_input_normalization,
                              standalone_batch_norms)
from convert.models import build_model
from tests.convert_model_fixtures import with_random_batch_norm


def _model(name, seed=0):
    import keras

    keras.utils.set_random_seed(seed)  # the convolution weights too, so every run checks the same model
    return with_random_batch_norm(build_model(name), np.random.default_rng(seed))


def _logits(model, x):
    """Pre-softmax scores: an untrained model's probabilities are too flat to show a difference."""
    import keras

    return keras.Model(model.inputs, model.get_layer("scores").input).predict(x, verbose=0)


def _pixels(n, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48)).astype(np.float32)


@pytest.mark.parametrize("name", ["mini_xception", "tiny"])
def test_fold_input_normalization_keeps_the_function(name):
    model = _model(name)
    px = _pixels(6)
    before = _logits(model, ((px - 127.5) / 127.5)[..., None])
    kernel = model.layers[1].kernel.numpy()
    fold_input_normalization(model, 127.5, 127.5, 128.0, 128.0)
    np.testing.assert_allclose(model.layers[1].kernel.numpy(), kernel * 128 / 127.5, rtol=1e-6)
    after = _logits(model, ((px - 128.0) / 128.0)[..., None])
    # only the zero padding of the first convolution moves (by 1/255 of a grey level)
    spread = np.abs(before).max()
    assert np.abs(after - before).max() < 2e-3 * spread
    # the old normalisation is now off by half a grey level everywhere: visibly worse
    stale = _logits(model, ((px - 127.5) / 127.5)[..., None])
    assert np.abs(stale - before).max() > 2 * np.abs(after - before).max()


def test_fold_refuses_a_model_that_does_not_start_with_a_convolution():
    import keras

    from edge.errors import ModelError

    inp = keras.Input((48, 48, 1))
    model = keras.Model(inp, keras.layers.Dense(7)(keras.layers.Flatten()(inp)))
    with pytest.raises(ModelError, match="not a Conv2D"):
        fold_input_normalization(model, 127.5, 127.5, 128.0, 128.0)


def test_equalization_keeps_the_function_and_equalizes_ranges():
    import keras

    from convert.equalize import EQUALIZE_POWER, MAX_FACTOR

    model = _model("mini_xception")
    x = ((_pixels(64) - 128.0) / 128.0)[..., None]
    before = _logits(model, x)
    relus = [l for l in model.layers if type(l).__name__ == "ReLU"]
    probe = keras.Model(model.inputs, [r.output for r in relus])
    his = [o.reshape(-1, o.shape[-1]).max(axis=0) for o in probe.predict(x, verbose=0)]
    assert equalize_relu_channels(model, x) == len(relus) == 6
    assert equalize_residual_channels(model, x) == 4
    assert np.abs(_logits(model, x) - before).max() < 1e-5 * np.abs(before).max()
    # each live channel of a ReLU output moved towards the widest one by the documented factor
    for hi, out in zip(his, probe.predict(x, verbose=0)):
        new = out.reshape(-1, out.shape[-1]).max(axis=0)
        live = hi > 0  # a channel that is never positive (dead ReLU) keeps its factor of 1
        assert live.sum() >= len(hi) // 2
        factor = np.minimum((hi.max() / hi[live]) ** EQUALIZE_POWER, MAX_FACTOR)
        np.testing.assert_allclose(new[live], hi[live] * factor, rtol=1e-4)
        assert new.max() == pytest.approx(hi.max(), rel=1e-5)  # the tensor's range, hence its scale, is kept
        assert (new[live] / new.max()).min() > (hi[live] / hi.max()).min()  # narrowest channel got wider


def test_residual_equalization_stays_inside_each_range():
    import keras

    model = _model("mini_xception", seed=3)
    x = ((_pixels(64, seed=4) - 128.0) / 128.0)[..., None]
    adds = [l for l in model.layers if type(l).__name__ == "Add"]
    probe = keras.Model(model.inputs, [a.output for a in adds])
    before = [(o.min(), o.max()) for o in probe.predict(x, verbose=0)]
    equalize_residual_channels(model, x)
    after = [(o.min(), o.max()) for o in probe.predict(x, verbose=0)]
    for (lo0, hi0), (lo1, hi1) in zip(before, after):
        assert lo1 >= lo0 - 1e-4 and hi1 <= hi0 + 1e-4  # the int8 scale does not grow
    assert consumers(model, adds[-1])[0].name.startswith("conv2d")


@pytest.mark.parametrize("name", ["mini_xception", "tiny"])
def test_expand_separable_computes_the_same_function(name):
    model = _model(name)
    x = ((_pixels(4) - 128.0) / 128.0)[..., None]
    expanded = expand_separable(model)
    kinds = {type(l).__name__ for l in expanded.layers}
    assert "SeparableConv2D" not in kinds and "SeparableConv2D" in {type(l).__name__ for l in model.layers}
    ref = _logits(model, x)
    np.testing.assert_allclose(_logits(expanded, x), ref, atol=1e-5 * np.abs(ref).max())


def test_standalone_batch_norms_become_depthwise_convolutions(tmp_path):
    """tiny's pre-activation batch norms (after an Add) compute the same function as 1x1 depthwise
    convolutions, and the converted model then has no MUL op: one rounding per batch norm, not two."""
    from convert.edgetpu import edgetpu_report
    from convert.quantize import convert_to_int8
    from edge.int8 import make_interpreter

    model = _model("tiny")
    assert len(standalone_batch_norms(model)) == 5 and not standalone_batch_norms(_model("mini_xception"))
    rewritten = batch_norm_as_depthwise(model)
    kinds = [type(rewritten.get_layer(l.name)).__name__ for l in standalone_batch_norms(model)]
    assert kinds == ["DepthwiseConv2D"] * 5
    x = ((_pixels(4) - 128.0) / 128.0)[..., None]
    ref = _logits(model, x)
    np.testing.assert_allclose(_logits(rewritten, x), ref, atol=1e-5 * np.abs(ref).max())

    px = _pixels(32, seed=5).astype(np.uint8)
    ops = []
    for graph in (model, expand_separable(rewritten)):
        path = tmp_path / f"{len(ops)}.tflite"
        path.write_bytes(convert_to_int8(graph, px))
        interpreter = make_interpreter(path).interpreter
        ops.append([d["op_name"] for d in interpreter._get_ops_details()])
        assert edgetpu_report(path).ok
    assert ops[0].count("MUL") == 5 and "MUL" not in ops[1]
    assert ops[1].count("DEPTHWISE_CONV_2D") == 5 and len(ops[1]) < len(ops[0])


def test_converted_model_takes_pixel_minus_128_and_has_no_depthwise_op(tmp_path):
    """The whole rewrite chain, then the real converter and the real interpreter."""
    from convert.edgetpu import edgetpu_report
    from convert.quantize import INT8_MEAN, INT8_STD, convert_to_int8
    from edge.int8 import make_interpreter

    model = _model("mini_xception")
    px = _pixels(48, seed=5).astype(np.uint8)
    px[0, 0, 0], px[0, 0, 1] = 0, 255  # the calibration spans 0..255, so the input scale is exactly 1/128
    reference = model.predict(((px.astype(np.float32) - 127.5) / 127.5)[..., None], verbose=0)
    fold_input_normalization(model, 127.5, 127.5, INT8_MEAN, INT8_STD)
    x = ((px.astype(np.float32) - INT8_MEAN) / INT8_STD)[..., None]
    equalize_relu_channels(model, x)
    equalize_residual_channels(model, x)
    path = tmp_path / "rewritten.tflite"
    path.write_bytes(convert_to_int8(expand_separable(model), px))

    interpreter = make_interpreter(path).interpreter
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = inp["quantization"]
    assert zero_point == 0 and abs(scale * 128 - 1) < 1e-6
    ops = {d["op_name"] for d in interpreter._get_ops_details()}
    assert "DEPTHWISE_CONV_2D" not in ops and "CONV_2D" in ops
    assert edgetpu_report(path).ok

    # int8 scores track the float model fed the training normalisation
    o_scale, o_zero = out["quantization"]
    scores = []
    for img in px[:16]:
        interpreter.set_tensor(inp["index"], (img.astype(np.int16) - 128).astype(np.int8)[None, ..., None])
        interpreter.invoke()
        scores.append((interpreter.get_tensor(out["index"])[0].astype(np.float32) - o_zero) * o_scale)
    assert np.abs(np.array(scores) - reference[:16]).max() < 0.1


def test_batch_norm_recalibration_measures_the_clean_statistics():
    """convert/batchnorm.py: moving statistics become the batch-norm input's statistics on the data."""
    import keras

    from convert.batchnorm import recalibrate_batch_norm

    keras.utils.set_random_seed(0)
    inp = keras.Input((48, 48, 1))
    conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inp)
    bn = keras.layers.BatchNormalization()
    out = keras.layers.Dense(7)(keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(bn(conv))))
    model = keras.Model(inp, out)
    x = ((_pixels(1024, seed=7) - 128.0) / 128.0)[..., None]
    pre = keras.Model(inp, conv).predict(x, verbose=0).reshape(-1, 4)
    assert recalibrate_batch_norm(model, x, batch_size=256) == 1
    np.testing.assert_allclose(bn.moving_mean.numpy(), pre.mean(axis=0), rtol=1e-3, atol=1e-5)
    # the average of per-batch variances: the population variance up to the between-batch spread
    np.testing.assert_allclose(bn.moving_variance.numpy(), pre.var(axis=0), rtol=0.02)
    assert bn.momentum == 0.99  # training-time setting restored
