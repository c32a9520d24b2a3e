"""Multiply-accumulates of one inference, counted from a ``.tflite`` graph (read from the file by
``convert.tflite_graph``, not from the interpreter's private op list)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convert.tflite_graph import list_ops

# Ops whose multiply-accumulates we count; everything else (pooling, add, mean, softmax) is cheap.
MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def count_macs(path: str | Path) -> dict:
    """Multiply-accumulates of one inference, counted from the ``.tflite`` graph.

    CONV_2D: output H*W*Cout * kh*kw*Cin (filter [Cout, kh, kw, Cin]); DEPTHWISE_CONV_2D: output
    H*W*C * kh*kw (one input channel per output channel; filter [1, kh, kw, C]); FULLY_CONNECTED:
    output elements * input features (weights [out, in]). Other ops are not counted.
    Returns ``{"total": int, "by_op": {op: macs}, "ops": {op: count}}``.
    """
    ops, tensors = list_ops(path)
    by_op: dict[str, int] = {}
    counts: dict[str, int] = {}
    for op in ops:
        name = op["op_name"]
        counts[name] = counts.get(name, 0) + 1
        if name not in MAC_OPS:
            continue
        out_shape = [int(d) for d in tensors[op["outputs"][0]]["shape"]]
        w_shape = [int(d) for d in tensors[op["inputs"][1]]["shape"]]
        out_elems = int(np.prod(out_shape))
        if name == "CONV_2D":
            macs = out_elems * w_shape[1] * w_shape[2] * w_shape[3]
        elif name == "DEPTHWISE_CONV_2D":
            macs = out_elems * w_shape[1] * w_shape[2]
        else:  # FULLY_CONNECTED
            macs = out_elems * w_shape[-1]
        by_op[name] = by_op.get(name, 0) + macs
    return {"total": int(sum(by_op.values())), "by_op": by_op, "ops": counts}


def total_macs(path: str | Path) -> int | None:
    """``count_macs(path)["total"]``, or None where no TFLite schema can be read (a 32-bit Pi with
    only ``tflite_runtime``): the speed table then says n/a instead of failing."""
    from edge.errors import ModelError

    try:
        return count_macs(path)["total"]
    except ModelError:
        return None
