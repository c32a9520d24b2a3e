"""Expression classifier: an int8 TFLite model (see DESIGN.md "Model contract") on the Edge TPU or CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.errors import ModelError
from edge.int8 import input_detail, make_interpreter, output_detail, quantize_input, run
from edge.manifest import INPUT_SIZE, default_model_path, load_manifest

QUANTIZED_DTYPES = (np.int8, np.uint8)


class ModelConfig(BaseModel):
    """``[model]`` config section."""

    model_config = ConfigDict(extra="forbid")
    path: str | None = None  # None -> the shipped edge/models/mini_xception.tflite
    accelerator: Literal["auto", "tpu", "cpu"] = "auto"
    device: str | None = None  # Edge TPU: "usb", "usb:0", "pci", "pci:0"; None = first found
    threads: int = Field(1, ge=1)
    # false: no expression model is loaded and no expression is inferred or published (faces, presence and, with
    # [attention], where they look still are): what a school in the EU may run (docs/attention.md, "Lawful use").
    emotions: bool = True


def _check_flatbuffer(path: Path) -> None:
    """Refuse files that are not TFLite flatbuffers before handing them to the interpreter."""
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise ModelError(f"model {path} is not a TFLite file (no TFL3 identifier): reinstall it or re-run `fer-edge convert`")


class ExpressionClassifier:
    """Scores 48x48 grayscale face crops over the manifest's labels.

    Attributes: ``labels`` (from the manifest), ``backend`` (``"edgetpu"`` or ``"cpu"``),
    ``manifest``, ``model_path`` (the file actually loaded).
    """

    def __init__(self, cfg: ModelConfig | None = None):
        cfg = cfg or ModelConfig()
        path = Path(cfg.path).expanduser() if cfg.path else default_model_path()
        if not path.is_file():
            raise ModelError(f"model file {path} not found: set [model] path to a .tflite file or reinstall fer-edge")
        _check_flatbuffer(path)
        self.manifest = load_manifest(path)  # checks sha256 and the label count
        self.labels = list(self.manifest.labels)
        self.interpreter, self.backend, self.model_path = make_interpreter(path, cfg.accelerator, cfg.device, cfg.threads)
        self._check_tensors(path)
        self._inp, self._out = input_detail(self.interpreter), output_detail(self.interpreter)  # per-crop lookups

    def _check_tensors(self, path: Path) -> None:
        inp = self.interpreter.get_input_details()
        out = self.interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ModelError(f"model {path} has {len(inp)} inputs / {len(out)} outputs, expected 1 / 1: not an expression model")
        inp, out = inp[0], out[0]
        want_in = [1, *INPUT_SIZE, 1]
        in_shape, out_shape = [int(v) for v in inp["shape"]], [int(v) for v in out["shape"]]
        if in_shape != want_in:
            raise ModelError(f"model {path} input shape is {in_shape}, expected {want_in} (48x48 grayscale): re-run `fer-edge convert`")
        if out_shape != [1, len(self.labels)]:
            raise ModelError(
                f"model {path} output shape is {out_shape} but its manifest has {len(self.labels)} labels: "
                "the model and its .json do not belong together"
            )
        for what, d in (("input", inp), ("output", out)):
            if d["dtype"] not in QUANTIZED_DTYPES:
                raise ModelError(
                    f"model {path} {what} is {np.dtype(d['dtype']).name}, expected int8 or uint8 (full-integer quantized): "
                    "re-run `fer-edge convert`"
                )
        if not inp["quantization"][0] or not out["quantization"][0]:
            raise ModelError(f"model {path} has no quantization parameters: re-run `fer-edge convert`")

    def quantize_input(self, crop48: np.ndarray) -> np.ndarray:
        """48x48 (or 48x48x1) uint8 gray crop -> the model's quantized [1, 48, 48, 1] input
        (``edge.int8.quantize_input`` with the manifest's mean/std, as the drift gate measured it)."""
        crop = np.asarray(crop48)
        if crop.shape not in ((48, 48), (48, 48, 1)):
            raise ValueError(f"expected a 48x48 grayscale crop, got shape {crop.shape}")
        return quantize_input(crop.reshape(1, 48, 48, 1), self.manifest.input.mean, self.manifest.input.std,
                              *self._inp["quantization"], self._inp["dtype"])

    def classify(self, crop48: np.ndarray) -> np.ndarray:
        """Probabilities float32 [len(labels)] for one 48x48 uint8 grayscale crop."""
        p = np.clip(run(self.interpreter, self.quantize_input(crop48), self._inp, self._out), 0.0, None)
        # int8 rounding leaves the softmax a few 1/256 off 1; renormalise so scores add up.
        total = float(p.sum())
        return (p / total if total > 0 else np.full_like(p, 1.0 / len(p))).astype(np.float32)

    def classify_batch(self, crops: list[np.ndarray]) -> np.ndarray:
        """Probabilities float32 [N, len(labels)] (the model has batch 1: one invoke per crop)."""
        if not crops:
            return np.zeros((0, len(self.labels)), np.float32)
        return np.stack([self.classify(c) for c in crops])

    def classify_faces(self, faces: list) -> np.ndarray:
        """Probabilities float32 [N, len(labels)] for detected faces (``edge.detect.Face``): the mean of the two
        views' for a face that has a second, upright one (``Face.upright``: a tilt of 5-20 degrees), else its
        crop's."""
        probs = self.classify_batch([f.crop for f in faces])
        for i, f in enumerate(faces):
            if getattr(f, "upright", None) is not None:
                probs[i] = (probs[i] + self.classify(f.upright)) / 2.0
        return probs
