"""BlazeFace rebuilt in Keras from the shipped float ``.tflite``: the same layers and weights, so that TensorFlow's
converter can quantize it to full-integer int8 (the MediaPipe file holds float16 weights behind DEQUANTIZE ops,
which no int8 conversion can start from).

``keras_from_tflite`` reads the graph with ``convert.tflite_graph`` and maps each op to a Keras layer; the
outputs are the detection heads themselves (one score map and one regressor map per feature-map stride), not
the model's reshaped and concatenated [1, N, 1] / [1, N, 16] tensors: each head gets its own int8 scale (the
scores' and the pixel regressors' ranges differ), and ``edge.blazeface`` flattens them in numpy. Only the ops
BlazeFace uses are mapped; any other op is a ModelError naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import convert  # noqa: F401  (ONEDNN_MAX_CPU_ISA before TensorFlow)
from convert.tflite_graph import TfliteGraph
from edge.errors import ModelError

PADDING = {0: "same", 1: "valid"}  # the flatbuffer's Padding enum
# Score logits are clipped to +-this in the graph: the stride-16 head's logits reach -450 on background, and an
# int8 output spanning that range has steps of ~2.8 (score 0.65 is logit 0.62); clipped, steps of 0.08. Nothing
# outside the clip is ever kept or told apart (sigmoid(-10) = 4.5e-5, sigmoid(10) = 0.99995).
LOGIT_CLIP = 10.0


def _weights(g: TfliteGraph) -> dict[int, np.ndarray]:
    """Float32 value of every constant tensor, and of every DEQUANTIZE output of a constant (float16 weights)."""
    values: dict[int, np.ndarray] = {}
    for i in range(len(g.sg.tensors)):
        data = g.const_data(i)
        if data is not None and g.ttype(i) in ("FLOAT32", "FLOAT16"):
            values[i] = data.astype(np.float32).reshape(g.static_shape(i))
    for op in g.operators:
        if g.op_name(op) == "DEQUANTIZE" and op.inputs[0] in values:
            values[op.outputs[0]] = values[op.inputs[0]]
    return values


def _head_outputs(g: TfliteGraph) -> list[int]:
    """The tensors fed to the final RESHAPEs (the heads), in the order of the RESHAPE ops."""
    return [int(op.inputs[0]) for op in g.operators if g.op_name(op) == "RESHAPE"]


def keras_from_tflite(path: str | Path, shape: tuple[int, int] | None = None):
    """A Keras model computing the heads of the BlazeFace ``.tflite`` at ``path`` for a fixed input
    ``shape`` (height, width; default the file's own), batch 1, float input in [-1, 1] as the file's.

    Returns (model, head names): the outputs in the order of the file's RESHAPE ops (for short-range:
    scores at stride 8, scores at stride 16, regressors at stride 8, regressors at stride 16); the score heads
    (fewer than 16 channels) clipped to +-``LOGIT_CLIP``.
    """
    import keras

    g = TfliteGraph(Path(path))
    values = _weights(g)
    inp_idx = int(g.sg.inputs[0])
    h, w = shape or tuple(g.static_shape(inp_idx)[1:3])
    inp = keras.Input(shape=(h, w, 3), batch_size=1, name="image")
    t: dict[int, object] = {inp_idx: inp}
    heads = _head_outputs(g)
    for n, op in enumerate(g.operators):
        name = g.op_name(op)
        ins = [int(i) for i in op.inputs if i >= 0]
        out = int(op.outputs[0])
        label = g.tname(out).split(";")[0].replace("/", "_").replace(":", "_") or f"op{n}"
        o = op.builtinOptions
        if name == "DEQUANTIZE" and ins[0] in values:
            continue
        if name in ("RESHAPE", "CONCATENATION"):
            continue  # the heads are the outputs; numpy flattens them
        if name == "CONV_2D":
            k = values[ins[1]]  # [out, kh, kw, in]
            layer = keras.layers.Conv2D(k.shape[0], k.shape[1:3], strides=(o.strideH, o.strideW),
                                        padding=PADDING[o.padding], name=label)
            t[out] = layer(t[ins[0]])
            layer.set_weights([k.transpose(1, 2, 3, 0), values[ins[2]]])
        elif name == "DEPTHWISE_CONV_2D":
            k = values[ins[1]]  # [1, kh, kw, channels]
            layer = keras.layers.DepthwiseConv2D(k.shape[1:3], strides=(o.strideH, o.strideW),
                                                 padding=PADDING[o.padding], name=label)
            t[out] = layer(t[ins[0]])
            layer.set_weights([k[0][..., None], values[ins[2]]])
        elif name == "MAX_POOL_2D":
            t[out] = keras.layers.MaxPooling2D((o.filterHeight, o.filterWidth), (o.strideH, o.strideW),
                                               padding=PADDING[o.padding], name=label)(t[ins[0]])
        elif name == "ADD":
            t[out] = keras.layers.Add(name=label)([t[ins[0]], t[ins[1]]])
        elif name == "RELU":
            t[out] = keras.layers.ReLU(name=label)(t[ins[0]])
        elif name == "PAD":
            pads = [[int(a), int(b)] for a, b in g.const_data(ins[1]).reshape(-1, 2)]
            if pads[:3] != [[0, 0]] * 3:
                raise ModelError(f"{path}: PAD {pads} is not a channel padding; only BlazeFace graphs are rebuilt")
            # Channel padding (the residual shortcut widened to the block's output): ZeroPadding2D reading
            # [1, H, W, C] as channels-first pads its last two axes, here (W: none, C: the padding).
            t[out] = keras.layers.ZeroPadding2D(((0, 0), tuple(pads[3])), data_format="channels_first",
                                                name=label)(t[ins[0]])
        else:
            raise ModelError(f"{path}: op {name} is not one BlazeFace uses; cannot rebuild it in Keras")
        if o is not None and getattr(o, "fusedActivationFunction", 0):
            raise ModelError(f"{path}: fused activation on {name} is not rebuilt; extend convert.blazeface_keras")
    names = [g.tname(i).split(";")[0] for i in heads]
    outs = [keras.layers.Lambda(lambda v: keras.ops.clip(v, -LOGIT_CLIP, LOGIT_CLIP), name=f"{n}_clip")(t[i])
            if g.static_shape(i)[-1] < 16 else t[i] for i, n in zip(heads, names)]
    return keras.Model(inp, outs, name="blazeface"), names


def equalize_depthwise(model, x_calibration: np.ndarray) -> int:
    """Per-channel range equalisation of every depthwise convolution read only by a convolution (BlazeFace's
    blocks: depthwise -> 1x1 convolution, no activation between): channel c of the depthwise output is scaled by
    (a power of) the largest factor that keeps it inside the tensor's calibrated [min, max], and the reader's input
    weights undo it, so the float function is unchanged while the narrow channels get more of the 8 bits (the
    depthwise output is rounded to int8 with one scale per tensor). In place; returns how many were equalised."""
    import keras

    from convert.equalize import EQUALIZE_POWER, MAX_FACTOR, _absorb_input_factor, _headroom, consumers

    pairs = []
    for dw in model.layers:
        if isinstance(dw, keras.layers.DepthwiseConv2D):
            readers = consumers(model, dw)
            if len(readers) == 1 and type(readers[0]) is keras.layers.Conv2D:
                pairs.append((dw, readers[0]))
    if not pairs:
        return 0
    probe = keras.Model(model.inputs, [dw.output for dw, _ in pairs])
    outs = [probe(x[None], training=False) for x in x_calibration]
    for i, (dw, reader) in enumerate(pairs):
        out = np.concatenate([np.asarray(o[i]).reshape(-1, dw.output.shape[-1]) for o in outs])
        factor = np.minimum(_headroom(out) ** EQUALIZE_POWER, MAX_FACTOR).astype(np.float32)
        dw.kernel.assign(dw.kernel.numpy() * factor[None, None, :, None])
        dw.bias.assign(dw.bias.numpy() * factor)
        _absorb_input_factor(reader, factor)
    return len(pairs)
