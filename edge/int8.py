"""The one adapter between fer-edge and a TFLite model, after pycoral's ``adapters`` (small functions).

Everything that runs a model goes through here: the classifier and the detectors on the device,
the drift gate and the benchmarks on the workstation. So the drift gate feeds the int8 model
exactly what the device feeds it.

- load: ``make_interpreter`` (``tflite_runtime``, else ``ai_edge_litert``; the Edge TPU delegate
  when asked), which also says which file it loaded; ``edgetpu_path`` / ``cpu_path`` name the
  ``<name>_edgetpu.tflite`` sibling (the only place that knows the suffix).
- quantize: ``quantize_input`` (pixels -> the model's int8/uint8 input, as TFLite's QUANTIZE kernel).
- invoke: ``invoke`` (set the input, run); ``run`` (invoke, then read and dequantize the output).
- dequantize: ``dequantize`` / ``output_scores``.
- top class: ``top_classes`` (ties broken by the manifest's ``class_prior``).

``tflite_runtime`` (Coral's / the Pi's usual package) is preferred; ``ai_edge_litert`` (the
successor on PyPI) is the fallback. Both expose the same ``Interpreter`` and ``load_delegate``.
The Edge TPU is reached through the ``libedgetpu`` delegate, as pycoral does, without pycoral.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edge.banners import quiet
from edge.errors import ModelError

log = logging.getLogger(__name__)

# Shared-library name of the Edge TPU runtime per OS (pycoral's table).
EDGETPU_SHARED_LIB = {"Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(platform.system(), "libedgetpu.so.1")

EDGETPU_HELP = (
    "install the Edge TPU runtime (`sudo apt install libedgetpu1-std` from Coral's apt repository "
    "https://coral.ai/software/#debian-packages), plug in the Coral and re-plug it once after "
    "installing the udev rules, or set [model] accelerator = \"cpu\""
)


def interpreter_module() -> Any:
    """The module providing ``Interpreter`` and ``load_delegate``.

    Raises ModelError when neither ``tflite_runtime`` nor ``ai_edge_litert`` is installed.
    """
    try:
        import tflite_runtime.interpreter as tfl  # type: ignore[import-not-found]
    except ImportError:
        try:
            import ai_edge_litert.interpreter as tfl  # type: ignore[import-not-found]
        except ImportError:
            raise ModelError(
                "no TFLite runtime found: `pip install ai-edge-litert` (or tflite-runtime on 32-bit Pi OS)"
            ) from None
    return tfl


EDGETPU_SUFFIX = "_edgetpu"  # edgetpu_compiler names its output <name>_edgetpu.tflite


def is_edgetpu_model(model_path: str | Path) -> bool:
    """True for a ``<name>_edgetpu.tflite`` (compiled for the Edge TPU; the CPU cannot run it)."""
    return Path(model_path).stem.endswith(EDGETPU_SUFFIX)


def edgetpu_path(model_path: str | Path) -> Path:
    """``foo.tflite`` (or ``foo_edgetpu.tflite``) -> ``foo_edgetpu.tflite``, the compiler's output beside it."""
    p = Path(model_path)
    return p if is_edgetpu_model(p) else p.with_name(p.stem + EDGETPU_SUFFIX + p.suffix)


def cpu_path(model_path: str | Path) -> Path:
    """``foo_edgetpu.tflite`` (or ``foo.tflite``) -> ``foo.tflite``, the plain int8 model."""
    p = Path(model_path)
    return p.with_name(p.stem[: -len(EDGETPU_SUFFIX)] + p.suffix) if is_edgetpu_model(p) else p


def _try_edgetpu_delegate(device: str | None) -> tuple[Any, str]:
    """``(delegate, "")`` or ``(None, reason)`` for the Edge TPU named by ``device``."""
    try:
        # Probe the library first: a failed load_delegate() leaves a half-built Delegate whose
        # destructor prints a traceback (ai_edge_litert 2.x).
        ctypes.CDLL(EDGETPU_SHARED_LIB)
    except OSError:
        return None, f"{EDGETPU_SHARED_LIB} is not installed"
    tfl = interpreter_module()
    try:
        return tfl.load_delegate(EDGETPU_SHARED_LIB, {"device": device} if device else {}), ""
    except (OSError, ValueError, RuntimeError) as exc:
        what = f"Edge TPU {device!r}" if device else "an Edge TPU"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"no {what} found ({detail})"


def load_edgetpu_delegate(device: str | None = None) -> Any:
    """Load the Edge TPU delegate.

    ``device``: ``None`` (first TPU found), ``"usb"``, ``"usb:0"``, ``"pci"``, ``"pci:0"``.
    Raises ModelError naming the fix when the runtime library or the device is missing.
    """
    delegate, reason = _try_edgetpu_delegate(device)
    if delegate is None:
        raise ModelError(f"cannot use the Edge TPU: {reason}; {EDGETPU_HELP}")
    return delegate


class Loaded(NamedTuple):
    """What ``make_interpreter`` returns: the allocated interpreter, ``backend`` (``"edgetpu"`` or
    ``"cpu"``) and ``path``, the file it actually loaded (the ``_edgetpu`` sibling, or the plain model)."""

    interpreter: Any
    backend: str
    path: Path


def _create(tfl: Any, model_path: Path, threads: int, delegates: list | None) -> Any:
    try:
        with quiet():  # TFLite's "Created ... XNNPACK delegate" banner; other output is kept
            interpreter = tfl.Interpreter(
                model_path=str(model_path), num_threads=max(1, int(threads)), experimental_delegates=delegates
            )
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"model {model_path} cannot be loaded by the TFLite interpreter ({reason}); "
            "the file is corrupt or not a TFLite model: reinstall it or re-run `fer-edge convert`"
        ) from None
    return interpreter


def make_interpreter(
    model_path: str | Path, accelerator: str = "cpu", device: str | None = None, threads: int = 1
) -> Loaded:
    """Create an allocated TFLite interpreter for ``model_path``.

    accelerator: ``"cpu"``; ``"tpu"`` (fail with ModelError if no Edge TPU can be used);
    ``"auto"`` (try the TPU, else CPU with one warning). When the TPU is used and the compiled
    ``<name>_edgetpu.tflite`` sibling exists, that file is loaded instead (the plain int8 model
    would otherwise run mostly on the CPU). device: Edge TPU selector (``"usb"``, ``"pci:0"``...).
    threads: CPU threads for ops the TPU does not run. Returns ``Loaded(interpreter, backend, path)``: backend ``"edgetpu"`` or ``"cpu"``,
    path the file loaded. A ``<name>_edgetpu.tflite`` asked for on the CPU loads ``<name>.tflite``.
    """
    model_path = Path(model_path)
    if accelerator not in ("auto", "tpu", "cpu"):
        raise ModelError(f"accelerator must be \"auto\", \"tpu\" or \"cpu\", got {accelerator!r}")
    if not model_path.is_file():
        raise ModelError(f"model file {model_path} not found: check [model] path or reinstall fer-edge")
    tfl = interpreter_module()
    if accelerator in ("auto", "tpu"):
        delegate, reason = _try_edgetpu_delegate(device)
        if delegate is None:
            if accelerator == "tpu":
                raise ModelError(f"cannot use the Edge TPU: {reason}; {EDGETPU_HELP}")
            log.warning("Edge TPU not used (%s): running the model on the CPU", reason)
        else:
            compiled = edgetpu_path(model_path)
            if not compiled.is_file():
                log.warning("%s not found: most ops will run on the CPU; compile it with edgetpu_compiler", compiled.name)
                compiled = model_path
            return Loaded(_create(tfl, compiled, threads, [delegate]), "edgetpu", compiled)
    if is_edgetpu_model(model_path):
        # A compiled model holds one edgetpu-custom-op the CPU cannot run: use the plain int8 model.
        plain = cpu_path(model_path)
        if not plain.is_file():
            raise ModelError(
                f"{model_path} is compiled for the Edge TPU and cannot run on the CPU, and {plain.name} is not "
                f"beside it: point [model] path at the plain int8 model, or {EDGETPU_HELP}"
            )
        log.info("running %s on the CPU instead of %s", plain.name, model_path.name)
        model_path = plain
    return Loaded(_create(tfl, model_path, threads, None), "cpu", model_path)


# --------------------------------------------------------------------------- tensors


def input_detail(interpreter: Any) -> dict:
    """The details of the model's (first) input tensor: ``index``, ``shape``, ``dtype``, ``quantization``."""
    return interpreter.get_input_details()[0]


def output_detail(interpreter: Any, i: int = 0) -> dict:
    """The details of output tensor ``i``."""
    return interpreter.get_output_details()[i]


def quantize_input(pixels: np.ndarray, mean: float, std: float, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Pixels -> model input: ``x = (pixel - mean) / std``, then ``round(x / scale) + zero_point``.

    The only input quantization in fer-edge (device and drift gate alike). Computed as TFLite's
    QUANTIZE kernel does (float32, multiply by 1/scale, round half to even), so the int8 model gets
    exactly the input the same model converted with float input would quantize itself (pixels 127
    and 128 can share a level when mean is 127.5). mean, std: the manifest's ``input``; scale,
    zero_point, dtype: the input tensor's (``*detail["quantization"], detail["dtype"]``).
    ``scale == 0`` means a float input: ``x`` is returned as ``dtype``. Keeps the shape of ``pixels``.
    """
    xf = (np.asarray(pixels, np.float32) - np.float32(mean)) / np.float32(std)
    if not scale:
        return xf.astype(dtype)
    q = np.round(xf * (np.float32(1.0) / np.float32(scale))) + zero_point
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


class InvokeClock:
    """Seconds spent inside ``interpreter.invoke()`` by this thread while the clock is on (``with InvokeClock() as
    c: ...; c.seconds``): a benchmark's split between model time and everything around it. Off: nothing is timed."""

    _local = threading.local()

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> "InvokeClock":
        self._outer = getattr(self._local, "clock", None)
        self._local.clock = self
        return self

    def __exit__(self, *exc: Any) -> None:
        self._local.clock = self._outer


def invoke(interpreter: Any, x: np.ndarray, index: int | None = None) -> None:
    """Set the input tensor (``index``, default the first input) to ``x`` and run the model once."""
    interpreter.set_tensor(input_detail(interpreter)["index"] if index is None else index, x)
    clock = getattr(InvokeClock._local, "clock", None)
    if clock is None:
        interpreter.invoke()
        return
    t0 = time.perf_counter()
    interpreter.invoke()
    clock.seconds += time.perf_counter() - t0


def dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    """Raw output values -> float32 ``(q - zero_point) * scale`` with the tensor's parameters
    (``detail["quantization"]``); a float tensor (scale 0) is returned as float32 unchanged."""
    scale, zero_point = detail["quantization"]
    q = np.asarray(q, np.float32)
    return (q - np.float32(zero_point)) * np.float32(scale) if scale else q


def output_scores(interpreter: Any, i: int = 0, detail: dict | None = None) -> np.ndarray:
    """Output ``i`` of the last invoke, flattened and dequantized: float32 ``[K]``. ``detail``: that
    output's ``output_detail``, when the caller keeps it (saves looking it up on every inference)."""
    detail = detail or output_detail(interpreter, i)
    return dequantize(interpreter.get_tensor(detail["index"]).reshape(-1), detail)


def run(interpreter: Any, x: np.ndarray, inp: dict | None = None, out: dict | None = None) -> np.ndarray:
    """One inference: ``invoke`` with the already-quantized input ``x`` ``[1, H, W, C]``, then
    ``output_scores`` (float32 ``[K]``). ``inp``/``out``: the ``input_detail``/``output_detail`` kept by
    a caller that runs the model many times (the classifier, the drift gate), so that each inference
    does not ask the interpreter for them again."""
    invoke(interpreter, x, None if inp is None else inp["index"])
    return output_scores(interpreter, detail=out)


def top_classes(scores, prior=None):
    """Index of the top class of each score vector, ties broken by ``prior``.

    scores: [K] or [N, K] class scores. prior: None or K training-split shares of the labels
    (``ModelManifest.class_prior``). Among classes with equal top scores the one with the larger
    prior wins (then the lower index), the most likely answer when the scores cannot tell; with no
    prior this is plain argmax (the lowest tied index, which favours "angry").
    Returns an int for one vector, an int array [N] for a batch.
    """
    s = np.asarray(scores, np.float64)
    if prior is None:
        return s.argmax(axis=-1) if s.ndim > 1 else int(s.argmax())
    top = s == s.max(axis=-1, keepdims=True)
    pick = np.where(top, np.asarray(prior, np.float64), -1.0).argmax(axis=-1)
    return pick if s.ndim > 1 else int(pick)
