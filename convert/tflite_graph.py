"""A read-only view of a ``.tflite`` flatbuffer: operators, tensors and constant buffers of its main graph.

Public replacement for the interpreter's private op listing: used by the offline Edge TPU check
and by the benchmarks' MAC count. Needs the TFLite schema (``ai_edge_litert``, else TensorFlow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.errors import ModelError


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


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


class TfliteGraph:
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

    @property
    def operators(self) -> list:
        """The operators of the main graph, in execution order (flatbuffer ``OperatorT`` objects)."""
        return list(self.sg.operators or [])

    def op_name(self, op) -> str:
        """The op's builtin name (``"CONV_2D"``), or ``"CUSTOM(<code>)"``."""
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

    def static_shape(self, i: int) -> list[int]:
        """The shape stored for tensor ``i`` (a dynamic dimension as the converter wrote it, usually 1)."""
        t = self.tensor(i)
        return [int(d) for d in (t.shape if t.shape is not None else [])]


def list_ops(path: str | Path) -> tuple[list[dict], dict[int, dict]]:
    """The operators of a ``.tflite`` in execution order and its tensors by index, read from the file.

    Each op: ``{"op_name", "inputs", "outputs"}`` (tensor indices; -1 for an omitted optional input);
    each tensor: ``{"name", "shape", "dtype"}`` (``dtype`` as the schema names it, e.g. ``"INT8"``).
    The same layout as the interpreter's op details, without its private API or a delegate
    replacing ops.
    """
    g = TfliteGraph(Path(path))
    ops = [{"op_name": g.op_name(op), "inputs": [int(i) for i in op.inputs],
            "outputs": [int(i) for i in op.outputs]} for op in g.operators]
    tensors = {i: {"name": g.tname(i), "shape": g.static_shape(i), "dtype": g.ttype(i)} for i in range(len(g.sg.tensors))}
    return ops, tensors
