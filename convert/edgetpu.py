"""Edge TPU compatibility of an int8 ``.tflite``: compile it, or check it offline.

Two ways to the same ``EdgeTpuReport`` (which ops would run on the Edge TPU, which on the CPU, why):

- ``compile_for_edgetpu``: when ``edgetpu_compiler`` is on PATH (x86-64 Linux only), run it with
  ``-s`` and parse the "Operator / Count / Status" table it prints; keeps ``<name>_edgetpu.tflite``.
- ``check_edgetpu_compat``: no compiler here (the usual case on a workstation without Coral's apt
  repository, and always on ARM), so read the flatbuffer and check every operator against the
  compiler's documented requirements (coral.ai/docs/edgetpu/models-intro/, "Model requirements"
  and "Supported operations"):

  * tensors are 8-bit quantized (int8/uint8); biases int32 and shape/axis parameters are constant;
  * tensor sizes are constant at compile time (no dynamic dimension);
  * tensors have at most 3 dimensions, or only the 3 innermost dimensions are > 1 (so batch 1);
  * only operators from the supported list, with their listed limitations;
  * the compiler maps one Edge TPU subgraph by default: from the first mappable op up to the
    first op that cannot map; that op and everything after it run on the CPU ("More than one
    subgraph is not supported"), even when supported (the experimental ``-a`` flag lifts this).

``edgetpu_report`` picks the compiler when it is available and the offline check otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge.errors import ModelError

MAPPED = "Mapped to Edge TPU"
AFTER_SPLIT = "More than one subgraph is not supported"  # the compiler's status for ops past the first CPU op
DOCS_URL = "https://coral.ai/docs/edgetpu/models-intro/#supported-operations"

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


@dataclass
class EdgeTpuOp:
    """One operator of the model and where it would run (offline check only)."""

    index: int
    op: str
    mapped: bool
    status: str  # short category, like the compiler's Status column
    reason: str = ""  # the full explanation when not mapped (or a caveat when mapped)


@dataclass
class EdgeTpuOpRow:
    """One row of the summary table: ``count`` ops of type ``op`` that share ``status``."""

    op: str
    count: int
    mapped: bool
    status: str
    reason: str = ""


@dataclass
class EdgeTpuReport:
    """Which ops of a model run on the Edge TPU, and why the others do not.

    ``method`` is ``"edgetpu_compiler"`` (parsed from the compiler's log) or ``"offline"``
    (checked against the documented requirements). ``problems`` are model-level findings (float
    input, several subgraphs) that make the model unfit even when each op alone would map.
    """

    model: str
    method: str
    ops: list[EdgeTpuOpRow] = field(default_factory=list)
    op_details: list[EdgeTpuOp] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tpu_subgraphs: int = 0
    min_runtime_version: int | None = None
    compiler_version: str | None = None
    compiled_model: str | None = None
    compiler_log: str | None = None

    @property
    def total_ops(self) -> int:
        return sum(r.count for r in self.ops)

    @property
    def tpu_ops(self) -> int:
        return sum(r.count for r in self.ops if r.mapped)

    @property
    def cpu_ops(self) -> int:
        return self.total_ops - self.tpu_ops

    @property
    def ok(self) -> bool:
        """True when every op maps to the Edge TPU and there is no model-level problem."""
        return self.total_ops > 0 and self.cpu_ops == 0 and not self.problems

    @property
    def first_cpu_op(self) -> EdgeTpuOp | None:
        return next((d for d in self.op_details if not d.mapped), None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(ok=self.ok, total_ops=self.total_ops, tpu_ops=self.tpu_ops, cpu_ops=self.cpu_ops)
        return d

    def summary_line(self) -> str:
        verdict = "OK: the whole model runs on the Edge TPU" if self.ok else "NOT OK"
        return (f"{self.tpu_ops} of {self.total_ops} ops on the Edge TPU, {self.cpu_ops} on the CPU, "
                f"{self.tpu_subgraphs} TPU subgraph(s). {verdict}")

    def _why_lines(self, max_ops: int = 6) -> list[str]:
        lines = list(self.problems)
        if self.op_details:
            unmapped = [d for d in self.op_details if not d.mapped]
            # Ops that fail on their own account first; the "after the first CPU op" ones in one line.
            own = [d for d in unmapped if d.status != AFTER_SPLIT]
            lines += [f"op #{d.index} {d.op}: {d.reason}" for d in own[:max_ops]]
            if len(own) > max_ops:
                lines.append(f"... and {len(own) - max_ops} more op(s) that cannot map (see the JSON report)")
            after = [d for d in unmapped if d.status == AFTER_SPLIT]
            if after:
                lines.append(f"{len(after)} later op(s) ({', '.join(sorted({d.op for d in after}))}): "
                             f"{after[0].reason}")
        else:
            lines += [f"{r.op} x{r.count}: {r.status}" for r in self.ops if not r.mapped]
        return lines

    def format_table(self) -> str:
        """Plain-text table for the terminal (like the compiler's own ``-s`` output)."""
        how = ("edgetpu_compiler " + (self.compiler_version or "")).strip() if self.method == "edgetpu_compiler" \
            else "offline check against the documented Edge TPU requirements (edgetpu_compiler not run)"
        out = [f"Edge TPU: {self.model}", f"method: {how}"]
        w = max([len("Operator")] + [len(r.op) for r in self.ops]) + 2
        out.append(f"{'Operator':<{w}}{'Count':>5}  {'Runs on':<8}Status")
        for r in self.ops:
            out.append(f"{r.op:<{w}}{r.count:>5}  {'TPU' if r.mapped else 'CPU':<8}{r.status}")
        out.append(self.summary_line())
        why = self._why_lines()
        if why:
            out.append("Why not on the Edge TPU:")
            out += [f"  - {line}" for line in why]
        if self.fixes:
            out.append("Fix:")
            out += [f"  - {fix}" for fix in self.fixes]
        out += [f"note: {n}" for n in self.notes]
        if self.compiled_model:
            out.append(f"compiled model: {self.compiled_model}")
        return "\n".join(out)

    def to_markdown(self) -> str:
        """Markdown section for reports and closing notes."""
        how = f"`edgetpu_compiler` {self.compiler_version or ''}".strip() if self.method == "edgetpu_compiler" \
            else "offline check against the [documented requirements](" + DOCS_URL + ")"
        out = [f"### Edge TPU: `{Path(self.model).name}`", "", f"Method: {how}.", "",
               "| Operator | Count | Runs on | Status |", "|---|---:|---|---|"]
        for r in self.ops:
            out.append(f"| {r.op} | {r.count} | {'TPU' if r.mapped else 'CPU'} | {r.status} |")
        out += ["", f"**{self.summary_line()}**"]
        why = self._why_lines()
        if why:
            out += ["", "Why not on the Edge TPU:", ""] + [f"- {line}" for line in why]
        if self.fixes:
            out += ["", "Fix:", ""] + [f"- {fix}" for fix in self.fixes]
        if self.notes:
            out += [""] + [f"- note: {n}" for n in self.notes]
        if self.compiled_model:
            out += ["", f"Compiled model: `{self.compiled_model}`"]
        return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- compiler path

def find_compiler() -> str | None:
    """Path of ``edgetpu_compiler`` on PATH, or None."""
    return shutil.which("edgetpu_compiler")


_ROW_RE = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")


def parse_compiler_log(text: str) -> dict:
    """Parse what ``edgetpu_compiler -s`` prints.

    Returns a dict with ``version``, ``tpu_subgraphs``, ``total_ops``, ``tpu_ops``, ``cpu_ops``
    (from the "Number of operations that will run on ..." lines when printed, which the compiler
    does only when some op stays on the CPU; else counted from the table), ``rows`` (list of
    ``EdgeTpuOpRow``), ``output_model`` and ``log_file``.
    """
    info: dict = {"version": None, "tpu_subgraphs": None, "total_ops": None, "tpu_ops": None,
                  "cpu_ops": None, "rows": [], "output_model": None, "log_file": None}
    in_table = False
    for line in text.splitlines():
        s = line.strip()
        if m := re.match(r"Edge TPU Compiler version (\S+)", s):
            info["version"] = m.group(1)
        elif m := re.match(r"Number of Edge TPU subgraphs:\s*(\d+)", s):
            info["tpu_subgraphs"] = int(m.group(1))
        elif m := re.match(r"Total number of operations:\s*(\d+)", s):
            info["total_ops"] = int(m.group(1))
        elif m := re.match(r"Number of operations that will run on Edge TPU:\s*(\d+)", s):
            info["tpu_ops"] = int(m.group(1))
        elif m := re.match(r"Number of operations that will run on CPU:\s*(\d+)", s):
            info["cpu_ops"] = int(m.group(1))
        elif m := re.match(r"Output model:\s*(\S.*)", s):
            info["output_model"] = m.group(1)
        elif m := re.match(r"Operation log:\s*(\S.*)", s):
            info["log_file"] = m.group(1)
        elif re.match(r"Operator\s+Count\s+Status", s):
            in_table = True
        elif in_table and (m := _ROW_RE.match(line)):
            status = m.group(3)
            info["rows"].append(EdgeTpuOpRow(op=m.group(1), count=int(m.group(2)),
                                             mapped=status == MAPPED, status=status))
        elif in_table and s and not _ROW_RE.match(line):
            in_table = False  # the table ended (a segment header or a message follows)
    rows = info["rows"]
    if info["tpu_ops"] is None:
        info["tpu_ops"] = sum(r.count for r in rows if r.mapped)
    if info["cpu_ops"] is None:
        info["cpu_ops"] = sum(r.count for r in rows if not r.mapped)
    if info["total_ops"] is None:
        info["total_ops"] = sum(r.count for r in rows)
    return info


def compile_for_edgetpu(tflite_path: str | Path, out_dir: str | Path | None = None,
                        timeout_s: float = 180) -> EdgeTpuReport:
    """Run ``edgetpu_compiler -s -o OUT_DIR MODEL`` and report which ops it mapped.

    tflite_path: the full-integer model. out_dir: where ``<name>_edgetpu.tflite`` (and the
    compiler's ``<name>_edgetpu.log``) go; default beside the model. Raises ``ModelError`` when
    the compiler is missing, fails, or times out.
    """
    tflite_path = Path(tflite_path)
    _check_file(tflite_path)
    compiler = find_compiler()
    if compiler is None:
        raise ModelError("edgetpu_compiler is not on PATH (it runs only on x86-64 Linux; install "
                         "Coral's edgetpu-compiler package), or use the offline check")
    out_dir = Path(out_dir) if out_dir else tflite_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [compiler, "-s", "-o", str(out_dir), str(tflite_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ModelError(f"edgetpu_compiler did not finish within {timeout_s:.0f} s on {tflite_path}; "
                         "try --timeout with a larger value") from None
    text = (proc.stdout or "") + ("\n" + proc.stderr if proc.stderr else "")
    compiled = out_dir / f"{tflite_path.stem}_edgetpu.tflite"
    if proc.returncode != 0 or not compiled.is_file():
        last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "no output")
        raise ModelError(f"edgetpu_compiler failed on {tflite_path} (exit {proc.returncode}: {last}); "
                         f"run `fer-edge edgetpu --offline {tflite_path}` to see which ops are the problem")
    info = parse_compiler_log(text)
    report = EdgeTpuReport(model=str(tflite_path), method="edgetpu_compiler", ops=info["rows"],
                           tpu_subgraphs=info["tpu_subgraphs"] or 0,
                           compiler_version=info["version"], compiled_model=str(compiled),
                           compiler_log=text)
    if not report.ops:
        report.problems.append("the compiler printed no operator table (was -s ignored?)")
    elif (info["tpu_ops"], info["cpu_ops"]) != (report.tpu_ops, report.cpu_ops):
        report.notes.append(f"compiler summary says {info['tpu_ops']} TPU / {info['cpu_ops']} CPU ops; "
                            f"the table adds up to {report.tpu_ops} / {report.cpu_ops}")
    return report


# --------------------------------------------------------------------------- offline path

def _schema():
    """The TFLite flatbuffer schema module (ai_edge_litert first, TensorFlow as a fallback)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - depends on what is installed
        try:
            from tensorflow.lite.python import schema_py_generated as schema
        except ImportError:
            raise ModelError("reading a .tflite needs ai-edge-litert (pip install ai-edge-litert) "
                             "or tensorflow") from None
    return schema


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"model file {path} not found; pass the path of an int8 .tflite")


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


class _Graph:
    """Flatbuffer view of a model: tensors, constant buffers and operators of subgraph 0."""

    def __init__(self, path: Path):
        schema = _schema()
        buf = path.read_bytes()
        if len(buf) < 8 or buf[4:8] != b"TFL3":
            raise ModelError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier); "
                             "pass the .tflite written by `fer-edge convert`")
        try:
            self.model = schema.ModelT.InitFromPackedBuf(buf, 0)
        except Exception as exc:  # a truncated/corrupt flatbuffer raises all sorts of things
            raise ModelError(f"{path} is a corrupt TFLite file ({type(exc).__name__}); re-export it") from None
        if not self.model.subgraphs:
            raise ModelError(f"{path} has no subgraph; re-export it")
        self.sg = self.model.subgraphs[0]
        self.types = _enum_names(schema.TensorType)
        self.op_names = _enum_names(schema.BuiltinOperator)
        self.act_names = _enum_names(schema.ActivationFunctionType)

    def op_name(self, op) -> str:
        code = self.model.operatorCodes[op.opcodeIndex]
        # builtinCode holds codes > 127; deprecatedBuiltinCode the small ones in older files.
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = self.op_names.get(builtin, f"BUILTIN_{builtin}")
        if name == "CUSTOM":
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
            name = f"CUSTOM({custom})"
        return name

    def tensor(self, i: int):
        return self.sg.tensors[i]

    def tname(self, i: int) -> str:
        n = self.tensor(i).name
        return n.decode(errors="replace") if isinstance(n, bytes) else str(n)

    def ttype(self, i: int) -> str:
        return self.types.get(self.tensor(i).type, str(self.tensor(i).type))

    def shape(self, i: int) -> list[int]:
        t = self.tensor(i)
        sig = t.shapeSignature if t.shapeSignature is not None and len(t.shapeSignature) else t.shape
        return [int(d) for d in (sig if sig is not None else [])]

    def const_data(self, i: int) -> np.ndarray | None:
        """The constant value of tensor ``i`` (flattened, its dtype), or None when not constant."""
        t = self.tensor(i)
        if t.buffer <= 0 or t.buffer >= len(self.model.buffers):
            return None
        b = self.model.buffers[t.buffer]
        if b.data is None or len(b.data) == 0:
            return None
        dtype = {"INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32, "INT64": np.int64,
                 "FLOAT32": np.float32, "INT16": np.int16, "FLOAT16": np.float16}.get(self.ttype(i))
        raw = np.asarray(b.data, dtype=np.uint8).tobytes()
        return np.frombuffer(raw, dtype=dtype) if dtype is not None else np.frombuffer(raw, np.uint8)

    def is_const(self, i: int) -> bool:
        t = self.tensor(i)
        if 0 < t.buffer < len(self.model.buffers):
            b = self.model.buffers[t.buffer]
            return (b.data is not None and len(b.data) > 0) or (b.offset or 0) > 1
        return False

    def zero_point(self, i: int) -> int:
        q = self.tensor(i).quantization
        zp = getattr(q, "zeroPoint", None) if q is not None else None
        return int(zp[0]) if zp is not None and len(zp) else 0

    def is_quantized(self, i: int) -> bool:
        q = self.tensor(i).quantization
        return q is not None and q.scale is not None and len(q.scale) > 0


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


def _tensor_problems(g: _Graph, op_name: str, op) -> list[tuple[str, str, str]]:
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


def _op_runtime(g: _Graph, name: str, op) -> int:
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


def _op_problems(g: _Graph, name: str, op) -> list[tuple[str, str, str]]:
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
    _check_file(tflite_path)
    g = _Graph(tflite_path)
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


def edgetpu_report(tflite_path: str | Path, out_dir: str | Path | None = None, timeout_s: float = 180,
                   offline: bool = False) -> EdgeTpuReport:
    """Compile with ``edgetpu_compiler`` when it is on PATH (and ``offline`` is False), else check offline."""
    if not offline and find_compiler() is not None:
        return compile_for_edgetpu(tflite_path, out_dir, timeout_s=timeout_s)
    return check_edgetpu_compat(tflite_path)


# --------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fer-edge edgetpu``."""
    parser.add_argument("model", metavar="MODEL.tflite", help="full-integer (int8) TFLite model")
    parser.add_argument("--out-dir", default=None,
                        help="where edgetpu_compiler writes <name>_edgetpu.tflite (default: beside the model)")
    parser.add_argument("--offline", action="store_true",
                        help="skip edgetpu_compiler even if it is on PATH; check against the documented requirements")
    parser.add_argument("--timeout", type=float, default=180, help="compiler timeout in seconds (default 180)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the report as JSON here")
    parser.add_argument("--markdown", dest="md_path", default=None, help="also write the report as Markdown here")


def run(args: argparse.Namespace) -> int:
    """``fer-edge edgetpu``: print the table; exit 0 when every op maps to the Edge TPU, else 1."""
    report = edgetpu_report(args.model, out_dir=args.out_dir, timeout_s=args.timeout, offline=args.offline)
    print(report.format_table())
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if args.md_path:
        Path(args.md_path).write_text(report.to_markdown())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m convert.edgetpu MODEL.tflite`` (the same as ``fer-edge edgetpu``)."""
    from convert.cli import run_standalone

    return run_standalone("fer-edge edgetpu", __doc__, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
