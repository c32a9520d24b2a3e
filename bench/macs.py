"""Multiply-accumulates of one inference, counted from a ``.tflite`` graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.common import interpreter_module

# Ops whose multiply-accumulates we count; everything else (pooling, add, mean, softmax) is cheap.
MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def tflite_ops(path: str | Path) -> tuple[list[dict], dict[int, dict]]:
    """The operators of a ``.tflite`` (in execution order) and its tensors by index.

    The interpreter is built without the default XNNPACK delegate so that the op list is the
    model's own (a delegate would replace the ops by one ``DELEGATE`` node).
    """
    mod = interpreter_module()
    kwargs = {}
    if hasattr(mod, "OpResolverType"):
        kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = mod.Interpreter(model_path=str(path), **kwargs)
    interp.allocate_tensors()
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    return list(interp._get_ops_details()), tensors


def count_macs(path: str | Path) -> dict:
    """Multiply-accumulates of one inference, counted from the ``.tflite`` graph.

    CONV_2D: output H*W*Cout * kh*kw*Cin (filter [Cout, kh, kw, Cin]); DEPTHWISE_CONV_2D: output
    H*W*C * kh*kw (one input channel per output channel; filter [1, kh, kw, C]); FULLY_CONNECTED:
    output elements * input features (weights [out, in]). Other ops are not counted.
    Returns ``{"total": int, "by_op": {op: macs}, "ops": {op: count}}``.
    """
    ops, tensors = tflite_ops(path)
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
