"""Empirical bias correction of the int8 detector's heads: shift each head's bias so that the int8 file's outputs
have the float model's mean where it matters (anchors near the score threshold).

Rounding weights and activations to int8 is not zero-mean through a deep depthwise net: on held-out frames of
Training faces the PTQ file's score logits sat 0.09-0.12 below the float model's on the anchors that decide a find
(float logit -1..2; mean |d| ~0.2), so faces near the threshold were lost. The correction is measured on the
calibration inputs (never on the videos the drift report scores), folded into the head convolutions' biases, and
the model is converted again; the float rebuild then differs from the float file by exactly that shift, so that
the *int8* file tracks the float file. This is the "bias correction" step of data-free quantization (Nagel et al.,
2019) applied to the outputs, where the shift is measured rather than predicted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Anchors whose float logit lies here decide finds (the thresholds are 0.5-0.7: logit 0-0.85); far below or
# above, a shift changes nothing that is kept.
DECIDING_LOGITS = (-1.0, 3.0)


def _head_convs(model) -> list:
    """The convolution computing each output of ``model`` (through the score heads' clip)."""
    import keras

    convs = []
    for out in model.outputs:
        layer = out._keras_history.operation
        if isinstance(layer, keras.layers.Lambda):
            layer = layer.input._keras_history.operation
        if not isinstance(layer, keras.layers.Conv2D):
            raise ValueError(f"head {out.name} is not computed by a convolution ({type(layer).__name__})")
        convs.append(layer)
    return convs


def int8_heads(int8_path: Path, x: np.ndarray) -> list[list[np.ndarray]]:
    """The int8 file's dequantized heads for each float input of ``x`` [N, h, w, 3] in [-1, 1], ordered as the
    Keras rebuild's outputs (scores finest first, then regressors finest first). A file whose input shape differs
    from ``x``'s is resized to it, as the CPU runs the 128x128 file at the scaled passes' shapes."""
    from edge.blazeface import order_heads
    from edge.int8 import dequantize, make_interpreter, quantize_input

    it = make_interpreter(int8_path).interpreter
    inp = it.get_input_details()[0]
    if list(inp["shape"][1:3]) != list(x.shape[1:3]):
        it.resize_tensor_input(inp["index"], [1, *x.shape[1:]])
        it.allocate_tensors()
        it.invoke()
    heads = order_heads(it.get_output_details())
    out = []
    for xi in x:
        canvas = np.round((xi + 1.0) * 127.5)
        it.set_tensor(inp["index"], quantize_input(canvas[None], 127.5, 127.5, *inp["quantization"], inp["dtype"]))
        it.invoke()
        out.append([dequantize(it.get_tensor(d["index"]), d)[0] for d in heads])
    return out


def head_shifts(model, int8_path: Path, x: np.ndarray) -> list[np.ndarray]:
    """Mean (int8 - float) of each output channel of each head over the anchors whose float logit is in
    ``DECIDING_LOGITS``, on inputs ``x``: one array per head (zeros where no anchor qualifies)."""
    q = int8_heads(int8_path, x)
    f = [[np.asarray(h)[0] for h in model(xi[None], training=False)] for xi in x]
    n_heads = len(f[0])
    half = n_heads // 2
    sums = [np.zeros(f[0][k].shape[-1], np.float64) for k in range(n_heads)]
    counts = [np.zeros(f[0][k].shape[-1], np.float64) for k in range(n_heads)]
    for fi, qi in zip(f, q):
        for k in range(half):  # score head k and its regressor head half + k share the anchors
            logit = fi[k]  # [h, w, anchors]
            hot = (logit >= DECIDING_LOGITS[0]) & (logit < DECIDING_LOGITS[1])
            sums[k] += np.where(hot, qi[k] - logit, 0.0).sum(axis=(0, 1))
            counts[k] += hot.sum(axis=(0, 1))
            anchors = logit.shape[-1]
            reg_f = fi[half + k].reshape(*logit.shape[:2], anchors, -1)
            reg_q = qi[half + k].reshape(reg_f.shape)
            sums[half + k] += np.where(hot[..., None], reg_q - reg_f, 0.0).sum(axis=(0, 1)).ravel()
            counts[half + k] += np.repeat(hot.sum(axis=(0, 1)), reg_f.shape[-1])
    return [np.where(c > 0, s / np.maximum(c, 1), 0.0).astype(np.float32) for s, c in zip(sums, counts)]


def correct_head_bias(model, int8_path: Path, x: np.ndarray) -> dict:
    """Subtract ``head_shifts`` from the head convolutions' biases of ``model`` (in place); convert again after.
    Returns the mean shift of the score heads and of the box regressors (channels 0-3), for the report."""
    shifts = head_shifts(model, int8_path, x)
    for conv, shift in zip(_head_convs(model), shifts):
        kernel, bias = conv.get_weights()
        conv.set_weights([kernel, bias - shift])
    half = len(shifts) // 2
    scores = np.concatenate(shifts[:half])
    boxes = np.concatenate([s.reshape(-1, 16)[:, :4].ravel() for s in shifts[half:]])
    return {"score_logit_shift": float(scores.mean()), "max_abs_score_logit_shift": float(np.abs(scores).max()),
            "box_px_shift_mean_abs": float(np.abs(boxes).mean())}
