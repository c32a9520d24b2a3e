"""TFLite runtime loading shared by the detector and the classifier.

``tflite_runtime`` (Coral's / the Pi's usual package) is preferred; ``ai_edge_litert`` (the
successor on PyPI) is the fallback. Both expose the same ``Interpreter`` and ``load_delegate``.
The Edge TPU is reached through the ``libedgetpu`` delegate, as pycoral does, without pycoral.
"""

from __future__ import annotations

import ctypes
import logging
import platform
from pathlib import Path
from typing import Any

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


def edgetpu_model_path(model_path: str | Path) -> Path:
    """``foo.tflite`` -> ``foo_edgetpu.tflite`` (the edgetpu_compiler output beside it)."""
    p = Path(model_path)
    if p.stem.endswith("_edgetpu"):
        return p
    return p.with_name(p.stem + "_edgetpu" + p.suffix)


def plain_model_path(model_path: str | Path) -> Path:
    """``foo_edgetpu.tflite`` -> ``foo.tflite``."""
    p = Path(model_path)
    return p.with_name(p.stem[: -len("_edgetpu")] + p.suffix) if p.stem.endswith("_edgetpu") else p


def loaded_model_path(model_path: str | Path, backend: str) -> Path:
    """The file ``make_interpreter(model_path, ...)`` loaded when it returned ``backend``."""
    p = Path(model_path)
    if backend == "edgetpu":
        compiled = edgetpu_model_path(p)
        return compiled if compiled.is_file() else p
    return plain_model_path(p)


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


def _create(tfl: Any, model_path: Path, threads: int, delegates: list | None) -> Any:
    try:
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
) -> tuple[Any, str]:
    """Create an allocated TFLite interpreter for ``model_path``.

    accelerator: ``"cpu"``; ``"tpu"`` (fail with ModelError if no Edge TPU can be used);
    ``"auto"`` (try the TPU, else CPU with one warning). When the TPU is used and the compiled
    ``<name>_edgetpu.tflite`` sibling exists, that file is loaded instead (the plain int8 model
    would otherwise run mostly on the CPU). device: Edge TPU selector (``"usb"``, ``"pci:0"``...).
    threads: CPU threads for ops the TPU does not run.
    Returns ``(interpreter, backend)`` with backend ``"edgetpu"`` or ``"cpu"``.
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
            compiled = edgetpu_model_path(model_path)
            if not compiled.is_file():
                log.warning("%s not found: most ops will run on the CPU; compile it with edgetpu_compiler", compiled.name)
                compiled = model_path
            return _create(tfl, compiled, threads, [delegate]), "edgetpu"
    if model_path.stem.endswith("_edgetpu"):
        # A compiled model holds one edgetpu-custom-op the CPU cannot run: use the plain int8 model.
        plain = plain_model_path(model_path)
        if not plain.is_file():
            raise ModelError(
                f"{model_path} is compiled for the Edge TPU and cannot run on the CPU, and {plain.name} is not "
                f"beside it: point [model] path at the plain int8 model, or {EDGETPU_HELP}"
            )
        log.info("running %s on the CPU instead of %s", plain.name, model_path.name)
        model_path = plain
    return _create(tfl, model_path, threads, None), "cpu"
