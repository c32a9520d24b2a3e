"""The model contract: ``<name>.json`` beside ``<name>.tflite`` (see DESIGN.md, "Model contract").

The workstation writes manifests (``convert.quantize``); the device reads and checks them
(``edge.classify``). Both go through ``ModelManifest`` so the contract lives in one place.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge.errors import ModelError
from edge.int8 import cpu_path, is_edgetpu_model

FER_LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
INPUT_SIZE = (48, 48)
MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = "mini_xception"


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: list[int] = Field(default_factory=lambda: list(INPUT_SIZE))
    color: str = "gray"
    mean: float = 127.5
    std: float = 127.5

    @field_validator("size")
    @classmethod
    def _size_is_48(cls, v: list[int]) -> list[int]:
        if list(v) != list(INPUT_SIZE):
            raise ValueError(f"input size must be {list(INPUT_SIZE)}, got {v}")
        return v

    @field_validator("std")
    @classmethod
    def _std_positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("std must be > 0")
        return v


class Metrics(BaseModel):
    model_config = ConfigDict(extra="allow")
    dataset: str = "FER2013"
    split: str = "PrivateTest"
    float_accuracy: float = 0.0
    int8_accuracy: float = 0.0
    agreement: float = 0.0
    macro_f1: float = 0.0


class Training(BaseModel):
    model_config = ConfigDict(extra="allow")
    epochs: int = 0
    seed: int = 0
    recipe: str = ""


class ModelManifest(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    version: int = 1
    labels: list[str]
    input: InputSpec = Field(default_factory=InputSpec)
    params: int = 0
    sha256: str
    metrics: Metrics = Field(default_factory=Metrics)
    trained: Training = Field(default_factory=Training)
    # Share of each label in the training split. int8 scores tie often (the softmax output has
    # 1/256 steps and its logits ~0.04): ties go to the more frequent class (see edge.int8.top_classes).
    class_prior: list[float] | None = None

    @field_validator("labels")
    @classmethod
    def _seven_labels(cls, v: list[str]) -> list[str]:
        if len(v) != len(FER_LABELS):
            raise ValueError(f"expected {len(FER_LABELS)} labels, got {len(v)}")
        return v

    @field_validator("class_prior")
    @classmethod
    def _prior_per_label(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (len(v) != len(FER_LABELS) or min(v) < 0):
            raise ValueError(f"class_prior needs {len(FER_LABELS)} non-negative shares, got {v}")
        return v


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_path_for(model_path: str | Path) -> Path:
    """``foo.tflite`` and ``foo_edgetpu.tflite`` -> ``foo.json``."""
    return cpu_path(model_path).with_suffix(".json")


def load_manifest(model_path: str | Path, check_sha: bool = True) -> ModelManifest:
    """Read and validate the manifest beside ``model_path``.

    ``check_sha`` compares the manifest's sha256 with the ``.tflite`` file (skipped for the
    ``_edgetpu`` sibling, which is a different file compiled from the same model).
    """
    model_path = Path(model_path)
    mpath = manifest_path_for(model_path)
    if not mpath.is_file():
        raise ModelError(
            f"model manifest {mpath} not found; every model needs its .json beside the .tflite "
            "(re-run `fer-edge convert`, or copy both files)"
        )
    try:
        data = json.loads(mpath.read_text())
        manifest = ModelManifest.model_validate(data)
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()
        detail = "; ".join(line.strip() for line in first[:3])
        raise ModelError(f"model manifest {mpath} is invalid ({detail}); re-run `fer-edge convert`") from None
    if check_sha and not is_edgetpu_model(model_path) and model_path.is_file():
        actual = sha256_of(model_path)
        if actual != manifest.sha256:
            raise ModelError(
                f"model {model_path} does not match its manifest (sha256 {actual[:12]}… != "
                f"{manifest.sha256[:12]}…): the file is corrupt or was replaced; reinstall it"
            )
    return manifest


def write_manifest(manifest: ModelManifest, model_path: str | Path) -> Path:
    """Write ``manifest`` as ``<name>.json`` beside ``model_path``."""
    mpath = manifest_path_for(model_path)
    mpath.write_text(json.dumps(manifest.model_dump(), indent=2) + "\n")
    return mpath


def default_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of a shipped model in the package's ``edge/models`` folder."""
    return MODELS_DIR / f"{name}.tflite"
