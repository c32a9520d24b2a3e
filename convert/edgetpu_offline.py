"""Offline Edge TPU check: read the int8 flatbuffer and check every operator against the compiler's
documented requirements (coral.ai/docs/edgetpu/models-intro/, "Model requirements" and
"Supported operations"), for machines without ``edgetpu_compiler`` (ARM, or no Coral apt repository).

See ``convert.edgetpu`` for the requirements checked; ``check_edgetpu_compat`` is the entry point.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from convert.edgetpu_report import (AFTER_SPLIT, DOCS_URL, MAPPED, EdgeTpuOp, EdgeTpuOpRow, EdgeTpuReport,
                                    check_model_file)
from convert.tflite_graph import TfliteGraph

# TFLite builtin name -> (minimum Edge TPU runtime version, documented limitation or "").
# From the "Supported operations" table of coral.ai/docs/edgetpu/models-intro (compiler 16).
SUPPORTED_OPS: dict[str, tuple[int, str]] = {
    "ADD": (1, ""),
    "AVERAGE_POOL_2D": (1, "No fused activation function."),
    "CONCATENATION": (1, "No fused activation function. A constant input is allowed only as one of "
                         "2 inputs and only when it is all zeroes."),
    "CONV_2D": (1, "Same dilation in x and y."),
    "DEPTHWISE_CONV_2D": (1, "Same dilation in x and y (dilation > 1 needs runtime 12)."),
    "EXPAND_DIMS": (13, ""),
    "FULLY_CONNECTED": (1, "Default weights format only; output tensor is one-dimensional."),
    "L2_NORMALIZATION": (1, ""),
    "LOGISTIC": (1, ""),
    "LSTM": (14, "Unidirectional LSTM only."),
    "MAXIMUM": (1, ""),
    "MAX_POOL_2D": (1, "No fused activation function."),
    "MEAN": (1, "Reduction along x/y (z needs runtime 13); never along the batch dimension."),
    "MINIMUM": (1, ""),
    "MUL": (1, ""),
    "PACK": (13, "No packing in the batch dimension."),
    "PAD": (1, "Padding along x/y (z needs runtime 13); never in the batch dimension."),
    "PRELU": (13, "Alpha must be constant."),
    "QUANTIZE": (13, "8-bit to 8-bit requantization; a float-to-int8 quantize of the input stays on the CPU."),
    "REDUCE_MAX": (14, "No reduction along the batch dimension."),
    "REDUCE_MIN": (14, "No reduction along the batch dimension."),
    "RELU": (1, ""),
    "RELU6": (1, ""),
    "RELU_N1_TO_1": (1, ""),
    "RESHAPE": (1, "Certain reshapes of large tensors may not map."),
    "RESIZE_BILINEAR": (1, "3-D input/output; may stay on the CPU to avoid precision loss."),
    "RESIZE_NEAREST_NEIGHBOR": (1, "3-D input/output; may stay on the CPU to avoid precision loss."),
    "RSQRT": (14, ""),
    "SLICE": (1, ""),
    "SOFTMAX": (1, "1-D input with at most 16,000 elements."),
    "SPACE_TO_DEPTH": (1, ""),
    "SPLIT": (1, "No splitting in the batch dimension."),
    "SQUARED_DIFFERENCE": (14, ""),
    "SQUEEZE": (1, ""),
    "STRIDED_SLICE": (1, "All strides 1, ellipsis mask 0, new-axis mask 0."),
    "SUB": (1, ""),
    "SUM": (13, "No reduction along the batch dimension."),
    "TANH": (1, ""),
    "TRANSPOSE": (14, ""),
    "TRANSPOSE_CONV": (13, ""),
}

EIGHT_BIT = {"INT8", "UINT8"}
PARAM_TYPES = {"INT32", "INT64"}  # constant biases, shapes, axes, paddings
NO_FUSED_ACTIVATION = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"}
BATCH_AXIS_OPS = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"}  # input[1] holds the axes


def _short(name: str, limit: int = 40) -> str:
    """Tensor names from the converter are ';'-joined op names: keep the first, trimmed."""
    first = name.split(";")[0]
    return first if len(first) <= limit else first[: limit - 1] + "…"


def _names(names: list[str]) -> str:
    shown = ", ".join(f"'{_short(n)}'" for n in names[:2])
    return shown + (f" (+{len(names) - 2} more)" if len(names) > 2 else "")


FIX_FULL_INT8 = ("convert with full-integer quantization: a representative dataset, "
                 "supported_ops=[TFLITE_BUILTINS_INT8], inference_input_type/inference_output_type=tf.int8")
FIX_STATIC = "build the model with a fixed batch of 1 (keras.Input(shape=(48, 48, 1), batch_size=1)) before converting"


def _tensor_problems(g: TfliteGraph, op_name: str, op) -> list[tuple[str, str, str]]:
    """Data type, dynamic-shape and rank problems of one op's tensors: [(status, reason, fix)]."""
    float_const: dict[str, list[str]] = {}
    float_act: dict[str, list[str]] = {}
    unquantized, dynamic, rank = [], [], []
    inputs = [i for i in op.inputs if i >= 0]
    outputs = [i for i in op.outputs if i >= 0]
    for i in inputs + outputs:
        name, ttype = g.tname(i), g.ttype(i)
        if i in inputs and g.is_const(i):
            if ttype not in EIGHT_BIT and ttype not in PARAM_TYPES:
                float_const.setdefault(ttype.lower(), []).append(name)
            continue
        if ttype not in EIGHT_BIT:
            # A float QUANTIZE input / DEQUANTIZE output is judged by that op's own rule.
            if not ((op_name == "QUANTIZE" and i in inputs) or (op_name == "DEQUANTIZE" and i in outputs)):
                float_act.setdefault(ttype.lower(), []).append(name)
            continue
        if not g.is_quantized(i):
            unquantized.append(name)
        shape = g.shape(i)
        if any(d < 0 for d in shape):
            dynamic.append((name, shape))
        elif len(shape) > 3 and any(d > 1 for d in shape[:-3]):
            rank.append((name, shape))
    problems = []
    dtype_status = "Operation is working on an unsupported data type"
    for t, names in float_act.items():
        problems.append((dtype_status, f"{t} tensor(s) {_names(names)}: the Edge TPU runs only 8-bit "
                         "quantized tensors", FIX_FULL_INT8))
    for t, names in float_const.items():
        problems.append((dtype_status, f"{t} weights {_names(names)}: weights must be 8-bit quantized",
                         FIX_FULL_INT8))
    if unquantized:
        problems.append((dtype_status, f"tensor(s) {_names(unquantized)} have no quantization parameters",
                         FIX_FULL_INT8))
    if dynamic:
        problems.append(("Tensor has dynamic shape", f"dynamic shape {dynamic[0][1]} ({_names([n for n, _ in dynamic])}): "
                         "tensor sizes must be fixed at compile time", FIX_STATIC))
    if rank:
        shape = rank[0][1]
        what = f"batch {shape[0]}" if len(shape) == 4 else f"rank {len(shape)}"
        problems.append(("Tensor has unsupported rank", f"shape {shape} ({what}, {_names([n for n, _ in rank])}): "
                         "only the 3 innermost dimensions may be > 1", FIX_STATIC))
    return problems


def _batch_axes(axes: np.ndarray, rank: int) -> bool:
    return rank >= 4 and any(int(a) % rank == 0 for a in axes)


LIMIT = "Supported op, but not with these parameters"


def _op_runtime(g: TfliteGraph, name: str, op) -> int:
    """Oldest Edge TPU runtime that runs this op instance (some limits were lifted in 12/13)."""
    version = SUPPORTED_OPS[name][0]
    inputs = [i for i in op.inputs if i >= 0]
    if name == "DEPTHWISE_CONV_2D" and op.builtinOptions is not None and op.builtinOptions.dilationWFactor > 1:
        version = max(version, 12)
    if name in ("MEAN", "PAD") and len(inputs) > 1:
        rank = len(g.shape(inputs[0]))
        param = g.const_data(inputs[1])
        if param is not None and rank:
            if name == "MEAN":
                channel = any(int(a) % rank == rank - 1 for a in param)
            else:
                channel = bool(np.any(param.reshape(rank, 2)[-1] != 0))
            if channel:
                version = max(version, 13)
    return version


def _op_problems(g: TfliteGraph, name: str, op) -> list[tuple[str, str, str]]:
    """Operator-specific limitations from the documented table: [(status, reason, fix)]."""
    if name == "DEQUANTIZE":
        return [("Operation not supported", "DEQUANTIZE to float is not an Edge TPU op (float model output)",
                 "convert with inference_output_type=tf.int8 (or tf.uint8)")]
    if name not in SUPPORTED_OPS:
        return [("Operation not supported", f"{name} is not on the Edge TPU supported-operation list",
                 f"replace {name} with an op from {DOCS_URL}")]
    opts = op.builtinOptions
    inputs = [i for i in op.inputs if i >= 0]
    outputs = [i for i in op.outputs if i >= 0]
    problems: list[tuple[str, str, str]] = []

    def limit(reason: str, fix: str = "") -> None:
        problems.append((LIMIT, reason, fix))

    act = getattr(opts, "fusedActivationFunction", 0) if opts is not None else 0
    if name in NO_FUSED_ACTIVATION and act:
        limit(f"fused {g.act_names.get(act, act)} activation on {name}",
              "apply the activation as its own layer before the pooling/concatenation")
    if name == "QUANTIZE" and inputs and g.ttype(inputs[0]) not in EIGHT_BIT:
        problems.append(("Operation is otherwise supported, but not mapped due to some unspecified limitation",
                         f"QUANTIZE of a {g.ttype(inputs[0]).lower()} input runs on the CPU (float model input)",
                         "convert with inference_input_type=tf.int8 (or tf.uint8)"))
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D") and opts is not None:
        if opts.dilationWFactor != opts.dilationHFactor:
            limit(f"dilation {opts.dilationHFactor}x{opts.dilationWFactor}: x and y dilation must be equal")
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"):
        # Model parameters (weights, bias) must be constant at compile time.
        params = inputs[1:3] if name != "TRANSPOSE_CONV" else inputs[1:2] + inputs[3:4]
        for i in params:
            if not g.is_const(i):
                limit(f"parameter '{_short(g.tname(i))}' is not constant at compile time")
    if name == "FULLY_CONNECTED":
        if opts is not None and opts.weightsFormat != 0:
            limit("weights are not in the default format")
        if outputs and any(d > 1 for d in g.shape(outputs[0])[:-1]):
            limit(f"output {g.shape(outputs[0])} is not one-dimensional")
    if name == "SOFTMAX" and inputs:
        shape = g.shape(inputs[0])
        if any(d > 1 for d in shape[:-1]) or (shape and shape[-1] > 16000):
            limit(f"input {shape}: only a 1-D input of at most 16,000 elements maps")
    if name in BATCH_AXIS_OPS and len(inputs) > 1:
        axes = g.const_data(inputs[1])
        if axes is None:
            limit("reduction axes are not constant")
        elif _batch_axes(axes, len(g.shape(inputs[0]))):
            limit(f"reduces along the batch dimension (axes {axes.tolist()})")
    if name == "PAD" and len(inputs) > 1:
        pads = g.const_data(inputs[1])
        rank = len(g.shape(inputs[0]))
        if pads is not None and rank >= 4 and np.any(pads.reshape(rank, 2)[0] != 0):
            limit("pads the batch dimension")
    if name == "SPLIT" and len(inputs) > 1:
        axis = g.const_data(inputs[0])
        if axis is not None and _batch_axes(axis, len(g.shape(inputs[1]))):
            limit("splits the batch dimension")
    if name == "PACK" and opts is not None and opts.axis == 0:
        limit("packs along the batch dimension (axis 0)")
    if name == "STRIDED_SLICE" and opts is not None:
        strides = g.const_data(inputs[3]) if len(inputs) > 3 else None
        if strides is None or np.any(strides != 1) or opts.ellipsisMask or opts.newAxisMask:
            limit("maps only with all strides 1, ellipsis mask 0 and new-axis mask 0")
    if name == "CONCATENATION":
        const_in = [i for i in inputs if g.is_const(i)]
        if const_in:
            zero = all(g.const_data(i) is not None and np.all(g.const_data(i) == g.zero_point(i)) for i in const_in)
            if len(inputs) != 2 or not zero:
                limit("a constant input maps only as one of 2 inputs and all zeroes (zero padding)")
    if name == "PRELU" and len(inputs) > 1 and not g.is_const(inputs[1]):
        limit("alpha is not constant")
    return problems


def check_edgetpu_compat(tflite_path: str | Path, multiple_subgraphs: bool = False) -> EdgeTpuReport:
    """Offline check of ``tflite_path`` against the Edge TPU compiler's documented requirements.

    multiple_subgraphs: assume the compiler's experimental ``-a`` flag (every op that can map
    maps, in several TPU subgraphs); default False, the compiler's default of one TPU subgraph
    that ends at the first op that cannot map.
    """
    tflite_path = Path(tflite_path)
    check_model_file(tflite_path)
    g = TfliteGraph(tflite_path)
    report = EdgeTpuReport(model=str(tflite_path), method="offline")

    # Model-level requirements.
    if len(g.model.subgraphs) > 1:
        report.problems.append(f"{len(g.model.subgraphs)} subgraphs (control flow such as WHILE/IF); "
                               "only the main graph can be compiled")
    for kind, idxs in (("input", g.sg.inputs), ("output", g.sg.outputs)):
        for i in idxs:
            shape, ttype = g.shape(i), g.ttype(i)
            if ttype not in EIGHT_BIT:
                report.problems.append(f"model {kind} is {ttype.lower()}, not int8/uint8")
            if any(d < 0 for d in shape):
                report.problems.append(f"model {kind} has a dynamic shape {shape}")
            elif shape and shape[0] != 1:
                report.problems.append(f"model {kind} has batch {shape[0]}; the Edge TPU needs batch 1")

    # Per-op checks, then the one-subgraph partitioning in execution order.
    started = closed = False
    first_cpu: EdgeTpuOp | None = None
    runs, in_run, min_rt, min_rt_ops = 0, False, 1, set()
    for idx, op in enumerate(g.sg.operators):
        name = g.op_name(op)
        problems = _op_problems(g, name, op) + _tensor_problems(g, name, op)
        if problems:
            status = problems[0][0]
            reason = "; ".join(dict.fromkeys(r for _, r, _ in problems))
            detail = EdgeTpuOp(idx, name, False, status, reason)
            for _, _, fix in problems:
                if fix and fix not in report.fixes:
                    report.fixes.append(fix)
            if started:
                closed = True
            first_cpu = first_cpu or detail
            in_run = False
        elif closed and not multiple_subgraphs:
            detail = EdgeTpuOp(idx, name, False, AFTER_SPLIT,
                               f"after op #{first_cpu.index} {first_cpu.op} (CPU): the compiler maps one Edge TPU "
                               "subgraph, so everything after the first CPU op runs on the CPU too "
                               "(experimental `edgetpu_compiler -a` maps more subgraphs)")
        else:
            caveat = SUPPORTED_OPS[name][1] if name.startswith("RESIZE_") or name == "RESHAPE" else ""
            detail = EdgeTpuOp(idx, name, True, MAPPED, caveat)
            started = True
            runtime = _op_runtime(g, name, op)
            if runtime > min_rt:
                min_rt, min_rt_ops = runtime, set()
            if runtime == min_rt:
                min_rt_ops.add(name)
            if not in_run:
                runs += 1
            in_run = True
        report.op_details.append(detail)

    report.tpu_subgraphs = runs
    report.min_runtime_version = min_rt if runs else None
    report.ops = _aggregate(report.op_details)
    if runs and min_rt > 1:
        report.notes.append(f"needs Edge TPU runtime (libedgetpu) {min_rt} or later for {', '.join(sorted(min_rt_ops))}")
    report.notes.append("offline check: the real compiler can still refuse an op for size/precision "
                        "reasons (\"unspecified limitation\"); compile on x86-64 Linux to be sure")
    return report


def _aggregate(details: list[EdgeTpuOp]) -> list[EdgeTpuOpRow]:
    rows: OrderedDict[tuple[str, str], EdgeTpuOpRow] = OrderedDict()
    for d in details:
        key = (d.op, d.status)
        if key in rows:
            rows[key].count += 1
        else:
            rows[key] = EdgeTpuOpRow(op=d.op, count=1, mapped=d.mapped, status=d.status,
                                     reason="" if d.mapped else d.reason)
    return list(rows.values())
