"""Rewrites of a trained Keras model that keep its float function but make its int8 version closer
to it. ``fer-edge convert`` applies them before calibration:

- ``fold_input_normalization``: the int8 input becomes exactly ``pixel - 128`` (docs/design.md);
- ``equalize_relu_channels``: per-channel range equalisation across ReLUs (Nagel et al. 2019,
  "Data-Free Quantization Through Weight Equalization and Bias Correction", section 4.1);
- ``expand_separable``: separable convolutions become full convolutions, so the depthwise output
  is never rounded to 8 bits.

Measured on mini_xception, FER2013 PublicTest (float vs int8 top-1 agreement): 96.6% as converted
before, 97.1% with the input fold and the expansion.
"""

from __future__ import annotations

import numpy as np

from edge.errors import ModelError


def _linear_readers():
    """Layers that can absorb a per-input-channel factor into their weights."""
    from keras import layers

    return (layers.Conv2D, layers.SeparableConv2D, layers.DepthwiseConv2D)


def consumers(model, layer) -> list:
    """The layers that take ``layer``'s output as an input (Keras 3 functional graph)."""
    return [l for l in model.layers
            if any(t._keras_history.operation is layer for n in l._inbound_nodes for t in n.input_tensors)]


def producer(layer):
    """The layer whose output is ``layer``'s (first) input (Keras 3 functional graph)."""
    return layer._inbound_nodes[0].input_tensors[0]._keras_history.operation


def fold_input_normalization(model, mean: float, std: float, new_mean: float, new_std: float) -> None:
    """Make ``model`` (trained on ``(pixel - mean) / std``) take ``(pixel - new_mean) / new_std``
    instead, in place, by folding the change of input into its first convolution.

    With ``u = (pixel - new_mean) / new_std`` the old input is ``x = a * u + b`` (``a = new_std / std``,
    ``b = (new_mean - mean) / std``), so ``conv(x) = a * conv(u) + b * sum(kernel)``: the kernel is
    scaled by ``a`` and ``b * sum(kernel)`` goes into the bias, or into the moving mean of the batch
    norm that follows a bias-free convolution. Exact away from the border; the zero padding of a
    'same' convolution now stands for ``x = b`` instead of 0 (1/255 of a grey level for 127.5 -> 128).
    """
    from keras import layers

    a, b = new_std / std, (new_mean - mean) / std
    if a == 1.0 and b == 0.0:
        return
    first = [l for l in model.layers if not isinstance(l, layers.InputLayer)][0]
    if type(first) is not layers.Conv2D:
        raise ModelError(f"cannot fold the input normalisation: the first layer of {model.name} is "
                         f"{type(first).__name__}, not a Conv2D; convert with the training mean/std instead")
    kernel = first.kernel.numpy()
    shift = b * kernel.sum(axis=(0, 1, 2))  # per output channel
    first.kernel.assign(a * kernel)
    if first.use_bias:
        first.bias.assign(first.bias.numpy() + shift)
        return
    after = consumers(model, first)
    if len(after) != 1 or not isinstance(after[0], layers.BatchNormalization):
        raise ModelError(f"cannot fold the input normalisation: {first.name} has no bias and is not followed "
                         "by a batch norm alone; convert with the training mean/std instead")
    after[0].moving_mean.assign(after[0].moving_mean.numpy() - shift)


# A channel's factor is (tensor max / channel max) ** EQUALIZE_POWER. The reader's weights for that
# channel shrink by the same factor and are quantized per output channel, so the full factor (power 1)
# trades activation precision for weight precision; the square root balances the two. Measured on
# PublicTest (float vs int8, mean KL): tiny 0.0094 without, 0.0102 with power 1 (factors up to 16),
# 0.0088 with the square root; mini_xception 0.0046 without, 0.0043 power 1, 0.0041 square root.
EQUALIZE_POWER = 0.5
MAX_FACTOR = 8.0


def equalize_relu_channels(model, x_calibration: np.ndarray) -> int:
    """Scale each channel of every ``BatchNormalization -> ReLU`` pair up towards the range of the
    widest channel of the ReLU output on ``x_calibration`` (see EQUALIZE_POWER), and undo the scale in
    the input weights of the convolutions that read it. In place; returns how many were equalised.

    Why: int8 activations get one scale per tensor, set by the widest channel, so narrow channels
    keep few levels. A positive per-channel factor passes through ReLU unchanged, so the model
    computes the same function while every channel uses all 8 bits. Pairs whose ReLU output feeds
    anything but Conv2D / SeparableConv2D / DepthwiseConv2D (which can absorb the factor) are left alone.
    """
    import keras
    from keras import layers

    linear_in = _linear_readers()
    pairs = []
    for bn in model.layers:
        if not isinstance(bn, layers.BatchNormalization) or not bn.scale or not bn.center:
            continue
        nxt = consumers(model, bn)
        if len(nxt) != 1 or type(nxt[0]) is not layers.ReLU or nxt[0].max_value is not None:
            continue
        readers = consumers(model, nxt[0])
        if readers and all(isinstance(r, linear_in) for r in readers):
            pairs.append((bn, nxt[0], readers))
    if not pairs:
        return 0
    probe = keras.Model(model.inputs, [relu.output for _, relu, _ in pairs])
    outs = probe.predict(x_calibration, batch_size=256, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    for (bn, _, readers), out in zip(pairs, outs):
        hi = out.reshape(-1, out.shape[-1]).max(axis=0)
        live = hi > 1e-6 * hi.max()  # dead channels keep factor 1
        factor = np.where(live, hi.max() / np.maximum(hi, 1e-12), 1.0)
        factor = np.minimum(factor ** EQUALIZE_POWER, MAX_FACTOR).astype(np.float32)
        bn.gamma.assign(bn.gamma.numpy() * factor)
        bn.beta.assign(bn.beta.numpy() * factor)
        for r in readers:
            _absorb_input_factor(r, factor)
    return len(pairs)


def _absorb_input_factor(reader, factor: np.ndarray) -> None:
    """Divide the input-channel weights of a convolution by ``factor`` (one per input channel)."""
    from keras import layers

    # input channels are axis 2 of every kernel: [h, w, in, multiplier] (depthwise) or [h, w, in, out]
    kernel = reader.depthwise_kernel if isinstance(reader, layers.SeparableConv2D) else reader.kernel
    kernel.assign(kernel.numpy() / factor[None, None, :, None])


def _headroom(out: np.ndarray) -> np.ndarray:
    """Per channel: the largest factor that keeps the channel inside the whole tensor's [min, max]."""
    flat = out.reshape(-1, out.shape[-1])
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    up = np.where(hi > 0, hi.max() / np.maximum(hi, 1e-12), np.inf)
    down = np.where(lo < 0, lo.min() / np.minimum(lo, -1e-12), np.inf)
    f = np.minimum(up, down)
    return np.where(np.isfinite(f), f, 1.0)


def equalize_residual_channels(model, x_calibration: np.ndarray) -> int:
    """The same equalisation for the residual adds of the mini-Xception blocks: ``BN [-> MaxPool]``
    on both inputs of an ``Add`` whose output is read only by convolutions. Channel c of both
    batch norms (hence of the sum) is scaled by (a power of) the largest factor that keeps it inside
    the calibrated range of all three tensors, and the readers' input weights undo it (max pooling
    commutes with a positive factor). In place; returns how many adds were equalised.
    """
    import keras
    from keras import layers

    linear_in = _linear_readers()
    found = []
    for add in model.layers:
        if not isinstance(add, layers.Add):
            continue
        readers = consumers(model, add)
        if not readers or not all(isinstance(r, linear_in) for r in readers):
            continue
        bns = []
        for node in add._inbound_nodes:
            for t in node.input_tensors:
                src = t._keras_history.operation
                if isinstance(src, layers.MaxPooling2D) and len(consumers(model, src)) == 1:
                    src = producer(src)
                if isinstance(src, layers.BatchNormalization) and src.scale and src.center \
                        and len(consumers(model, src)) == 1:
                    bns.append(src)
        if len(bns) == 2:
            found.append((add, bns, readers))
    if not found:
        return 0
    probe = keras.Model(model.inputs, [t for add, bns, _ in found for t in (bns[0].output, bns[1].output, add.output)])
    outs = probe.predict(x_calibration, batch_size=256, verbose=0)
    for i, (add, bns, readers) in enumerate(found):
        factor = np.minimum.reduce([_headroom(o) for o in outs[3 * i: 3 * i + 3]])
        factor = np.minimum(factor ** EQUALIZE_POWER, MAX_FACTOR).astype(np.float32)
        for bn in bns:
            bn.gamma.assign(bn.gamma.numpy() * factor)
            bn.beta.assign(bn.beta.numpy() * factor)
        for r in readers:
            _absorb_input_factor(r, factor)
    return len(found)


def expand_separable(model):
    """A copy of ``model`` whose SeparableConv2D layers are full Conv2D layers computing the same
    function: kernel[h, w, i, o] = sum over m of depthwise[h, w, i, m] * pointwise[i*M + m, o]
    (M = depth multiplier).

    Why: TFLite lowers a separable convolution to DEPTHWISE_CONV_2D + CONV_2D and rounds the
    depthwise output, which is not batch-normalised (wide, uneven range), to 8 bits. In mini_xception
    those roundings were the largest source of float/int8 disagreement (simulated on PublicTest:
    top-1 agreement 96.3% with them, 97.6% without). The price is ~9x the weights and MACs of those
    layers; the float model, its trained parameters and its outputs are unchanged.
    """
    import keras
    from keras import layers

    def clone(layer):
        if isinstance(layer, layers.SeparableConv2D):
            return layers.Conv2D(layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding,
                                 dilation_rate=layer.dilation_rate, use_bias=layer.use_bias,
                                 activation=layer.activation, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    expanded = keras.models.clone_model(model, clone_function=clone)
    for old in model.layers:
        new = expanded.get_layer(old.name)
        if isinstance(old, layers.SeparableConv2D):
            dw, pw = old.depthwise_kernel.numpy(), old.pointwise_kernel.numpy()
            cin, mult = dw.shape[2], dw.shape[3]
            kernel = np.einsum("hwim,imo->hwio", dw, pw[0, 0].reshape(cin, mult, -1))
            new.set_weights([kernel, old.bias.numpy()] if old.use_bias else [kernel])
        else:
            new.set_weights(old.get_weights())
    return expanded


def standalone_batch_norms(model) -> list:
    """The BatchNormalization layers that the TFLite converter cannot fold into a convolution before
    them (their input comes from an Add, a pooling or another non-linear layer)."""
    from keras import layers

    folds_into = (layers.Conv2D, layers.SeparableConv2D, layers.DepthwiseConv2D, layers.Dense)
    found = []
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            if not isinstance(producer(layer), folds_into):
                found.append(layer)
    return found


def batch_norm_as_depthwise(model):
    """A copy of ``model`` in which every standalone batch norm (see ``standalone_batch_norms``) is a
    1x1 DepthwiseConv2D with bias computing the same per-channel affine map
    ``gamma * (x - mean) / sqrt(var + eps) + beta``. Returns ``model`` itself when there is none.

    Why: TFLite lowers a standalone batch norm to MUL then ADD and rounds the MUL's output, which
    is neither centred nor clipped by the ReLU that follows, to 8 bits; in `tiny` (pre-activated
    blocks) that tensor's quantization step is ~3x the step of the ReLU output after it. A depthwise
    convolution does the multiply and the add in its 32-bit accumulator, takes the ReLU as its
    fused activation and rounds once. Each channel has one weight, so per-channel int8 weights are
    exact. The float function is unchanged.
    """
    import keras
    from keras import layers

    targets = {l.name for l in standalone_batch_norms(model)}
    if not targets:
        return model

    def clone(layer):
        if layer.name in targets:
            return layers.DepthwiseConv2D(1, use_bias=True, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    def call(layer, *args, **kwargs):
        if layer.name in targets:
            kwargs.pop("mask", None)  # BatchNormalization's call takes a mask, a convolution's does not
            kwargs.pop("training", None)
        return layer(*args, **kwargs)

    rewritten = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for old in model.layers:
        new = rewritten.get_layer(old.name)
        if old.name in targets:
            gamma, beta, mean, var = old.get_weights()
            scale = gamma / np.sqrt(var + old.epsilon)
            new.set_weights([scale.reshape(1, 1, -1, 1).astype(np.float32), (beta - mean * scale).astype(np.float32)])
        else:
            new.set_weights(old.get_weights())
    return rewritten
