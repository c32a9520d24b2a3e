"""Face detection: BlazeFace (MediaPipe's TFLite models, decoded in numpy) or an OpenCV Haar fallback.

Each detector turns a BGR frame into ``Face`` records: the face box in pixels, a score, and a
48x48 grayscale crop ready for the expression classifier. Registry: ``DETECTORS``.

OpenCV is imported by the functions that use it, so loading the config (``fer-edge monitor``)
does not load it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.errors import ModelError
from edge.manifest import MODELS_DIR
from edge.int8 import invoke, make_interpreter

CROP_SIZE = 48


class DetectorConfig(BaseModel):
    """``[detector]`` config section."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["blazeface_full", "blazeface_short", "haar"] = "blazeface_full"
    min_score: float = Field(0.5, ge=0.0, le=1.0)  # detector confidence (BlazeFace only)
    min_size: int = Field(48, ge=1)  # faces whose box is smaller than this (pixels) are skipped
    # Crop context added on each side, as a fraction of the box size. 0.1 matches FER2013's framing:
    # BlazeFace on upscaled FER2013 images gives boxes that need a median margin of 0.08 to
    # reproduce the dataset's crop (300 images measured), so the classifier sees what it learnt on.
    margin: float = Field(0.1, ge=0.0, le=1.0)
    max_faces: int = Field(16, ge=1)
    threads: int = Field(1, ge=1)


@dataclass
class Face:
    """One detected face."""

    box: tuple[int, int, int, int]  # x, y, w, h in pixels of the frame
    score: float
    crop: np.ndarray  # 48x48 uint8 grayscale


# --------------------------------------------------------------------------- crops and boxes


def crop_face(image_bgr: np.ndarray, box: tuple[int, int, int, int], margin: float) -> np.ndarray:
    """48x48 grayscale crop of ``box`` (x, y, w, h) widened by ``margin`` x size on each side.

    The crop is square around the box centre (the classifier was trained on square faces, so
    stretching would distort expressions); parts outside the frame repeat the border pixels.
    """
    import cv2

    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    x1, y1 = x0 + max(1, int(round(side))), y0 + max(1, int(round(side)))
    gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
    ih, iw = gray.shape[:2]
    pad = max(0, -x0, -y0, x1 - iw, y1 - ih)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    patch = gray[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
    interp = cv2.INTER_AREA if patch.shape[0] > CROP_SIZE else cv2.INTER_LINEAR
    return cv2.resize(patch, (CROP_SIZE, CROP_SIZE), interpolation=interp)


def _clip_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = max(0, int(round(x0))), max(0, int(round(y0)))
    x1, y1 = min(width, int(round(x1))), min(height, int(round(y1)))
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def _faces_from_boxes(
    image_bgr: np.ndarray, boxes: list[tuple[int, int, int, int]], scores: list[float], cfg: DetectorConfig
) -> list[Face]:
    """Apply min_size / max_faces and cut the crops, best score first."""
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    faces = []
    for i in order:
        box = boxes[i]
        if min(box[2], box[3]) < cfg.min_size:
            continue
        faces.append(Face(box=tuple(int(v) for v in box), score=float(scores[i]), crop=crop_face(image_bgr, box, cfg.margin)))
        if len(faces) >= cfg.max_faces:
            break
    return faces


# --------------------------------------------------------------------------- BlazeFace


@dataclass(frozen=True)
class BlazeFaceSpec:
    """Model file and the MediaPipe graph options it needs (face_detection_*_common.pbtxt)."""

    filename: str
    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    min_score_thresh: float  # the graph's own threshold, combined with cfg.min_score
    aspect_ratios: tuple[float, ...] = (1.0,)
    anchor_offset: float = 0.5
    score_clipping_thresh: float = 100.0
    min_suppression_threshold: float = 0.3


BLAZEFACE_SPECS = {
    "blazeface_full": BlazeFaceSpec("face_detection_full_range.tflite", 192, (4,), 0.0, 0.6),
    "blazeface_short": BlazeFaceSpec("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 1.0, 0.5),
}


def ssd_anchor_centers(spec: BlazeFaceSpec) -> np.ndarray:
    """Anchor centres [N, 2] (x, y in 0..1) as MediaPipe's SsdAnchorsCalculator makes them.

    Layers with the same stride share one feature map; each layer adds one anchor per aspect
    ratio plus one interpolated-scale anchor when ``interpolated_scale_aspect_ratio > 0``. With
    ``fixed_anchor_size`` (both face graphs) every anchor is 1x1, so only the centres matter.
    """
    per_layer = len(spec.aspect_ratios) + (1 if spec.interpolated_scale_aspect_ratio > 0 else 0)
    centers = []
    layer = 0
    while layer < len(spec.strides):
        stride = spec.strides[layer]
        last = layer
        while last < len(spec.strides) and spec.strides[last] == stride:
            last += 1
        repeats = per_layer * (last - layer)
        fm = int(np.ceil(spec.input_size / stride))
        ys, xs = np.meshgrid((np.arange(fm) + spec.anchor_offset) / fm, (np.arange(fm) + spec.anchor_offset) / fm, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centers.append(np.repeat(grid, repeats, axis=0))
        layer = last
    return np.concatenate(centers).astype(np.float32)


def decode_boxes(raw: np.ndarray, anchors: np.ndarray, input_size: int) -> np.ndarray:
    """Raw regressors [N, >=4] -> boxes [N, 4] as (xmin, ymin, xmax, ymax) in 0..1 of the input.

    TensorsToDetectionsCalculator with x/y/w/h_scale = input size and anchor size 1, output order
    (x, y, w, h) ("reverse_output_order"); keypoints are not needed here.
    """
    cx = raw[:, 0] / input_size + anchors[:, 0]
    cy = raw[:, 1] / input_size + anchors[:, 1]
    w = raw[:, 2] / input_size
    h = raw[:, 3] / input_size
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box with each row of ``boxes``."""
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-maximum suppression.

    Repeatedly take the best remaining box, gather every remaining box overlapping it by IoU >
    ``threshold`` (itself included) and replace them by their score-weighted mean box, keeping the
    best score. Returns (boxes [K, 4], scores [K]).
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    kept_boxes, kept_scores = [], []
    while len(boxes):
        overlap = iou_one_to_many(boxes[0], boxes) > threshold
        overlap[0] = True
        w = scores[overlap]
        kept_boxes.append((boxes[overlap] * w[:, None]).sum(axis=0) / w.sum())
        kept_scores.append(scores[0])
        boxes, scores = boxes[~overlap], scores[~overlap]
    if not kept_boxes:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    return np.asarray(kept_boxes, np.float32), np.asarray(kept_scores, np.float32)


def letterbox(image_bgr: np.ndarray, size: int) -> tuple[np.ndarray, float, int, int]:
    """Resize keeping the aspect ratio into a ``size`` x ``size`` RGB canvas (black borders).

    Returns (canvas uint8 RGB, scale, pad_x, pad_y): input pixel = (canvas pixel - pad) / scale.
    """
    import cv2

    h, w = image_bgr.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    resized = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((size, size, 3), np.uint8)
    pad_x, pad_y = (size - nw) // 2, (size - nh) // 2
    canvas[pad_y : pad_y + nh, pad_x : pad_x + nw] = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    return canvas, scale, pad_x, pad_y


class FaceDetector:
    """Base class: ``detect(image_bgr) -> list[Face]``."""

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 HxWx3 frame, best score first."""
        raise NotImplementedError


class BlazeFaceDetector(FaceDetector):
    """MediaPipe BlazeFace (full-range 192x192 or short-range 128x128) on the TFLite runtime (CPU)."""

    def __init__(self, cfg: DetectorConfig, model_dir: Path = MODELS_DIR):
        super().__init__(cfg)
        self.spec = BLAZEFACE_SPECS[cfg.type]
        path = Path(model_dir) / self.spec.filename
        # Float model: it gains nothing from the Edge TPU, which is kept for the classifier.
        self.interpreter, self.backend, _ = make_interpreter(path, "cpu", None, cfg.threads)
        inp = self.interpreter.get_input_details()[0]
        if [int(v) for v in inp["shape"]] != [1, self.spec.input_size, self.spec.input_size, 3]:
            raise ModelError(f"{path} has input shape {[int(v) for v in inp['shape']]}, expected a BlazeFace model: reinstall fer-edge")
        self._input = inp["index"]
        outs = sorted(self.interpreter.get_output_details(), key=lambda d: int(d["shape"][-1]), reverse=True)
        self._regressors, self._classifiers = outs[0]["index"], outs[1]["index"]
        self.anchors = ssd_anchor_centers(self.spec)
        if len(self.anchors) != int(outs[0]["shape"][1]):
            raise ModelError(f"{path} has {int(outs[0]['shape'][1])} anchors, expected {len(self.anchors)}: reinstall fer-edge")
        self.min_score = max(cfg.min_score, 0.0)

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 frame: letterbox, run, decode anchors, weighted NMS, crop."""
        size = self.spec.input_size
        canvas, scale, pad_x, pad_y = letterbox(image_bgr, size)
        tensor = (canvas.astype(np.float32) / 127.5 - 1.0)[None]  # the graphs feed RGB in [-1, 1]
        invoke(self.interpreter, tensor, self._input)
        raw = self.interpreter.get_tensor(self._regressors)[0]
        logits = self.interpreter.get_tensor(self._classifiers)[0, :, 0]
        clip = self.spec.score_clipping_thresh
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -clip, clip)))  # float64: exp(100) overflows float32
        keep = scores >= self.min_score
        if not keep.any():
            return []
        boxes = decode_boxes(raw[keep], self.anchors[keep], size)
        boxes, kept = weighted_nms(boxes, scores[keep], self.spec.min_suppression_threshold)
        ih, iw = image_bgr.shape[:2]
        px = []
        for x0, y0, x1, y1 in boxes * size:
            px.append(_clip_box((x0 - pad_x) / scale, (y0 - pad_y) / scale, (x1 - pad_x) / scale, (y1 - pad_y) / scale, iw, ih))
        return _faces_from_boxes(image_bgr, px, list(kept), self.cfg)


# --------------------------------------------------------------------------- Haar fallback

HAAR_DIRS = ("/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades")
HAAR_FILE = "haarcascade_frontalface_default.xml"


def find_haar_cascade() -> Path:
    """Path of OpenCV's frontal-face Haar cascade; ModelError when none is installed."""
    import cv2

    dirs = []
    data = getattr(cv2, "data", None)
    if data is not None and getattr(data, "haarcascades", None):
        dirs.append(data.haarcascades)
    dirs.extend(HAAR_DIRS)
    for d in dirs:
        p = Path(d) / HAAR_FILE
        if p.is_file():
            return p
    raise ModelError(
        f"Haar cascade {HAAR_FILE} not found (looked in {', '.join(dirs)}): "
        "`pip install 'opencv-python-headless<5'` or `sudo apt install opencv-data`, or use detector type blazeface_full"
    )


class HaarDetector(FaceDetector):
    """OpenCV Viola-Jones cascade: no model runtime needed, weaker on small or turned faces.

    It has no calibrated confidence: every face gets score 1.0 and ``min_score`` is not used.
    """

    def __init__(self, cfg: DetectorConfig):
        import cv2

        super().__init__(cfg)
        if not hasattr(cv2, "CascadeClassifier"):
            raise ModelError("this OpenCV has no CascadeClassifier (OpenCV 5): install 'opencv-python-headless<5'")
        path = find_haar_cascade()
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise ModelError(f"Haar cascade {path} cannot be loaded: reinstall opencv-data / opencv-python-headless")

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 frame (score 1.0 each)."""
        import cv2

        gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
        found = self.cascade.detectMultiScale(
            cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=5, minSize=(self.cfg.min_size, self.cfg.min_size)
        )
        # Larger faces first: all scores tie and the sort in _faces_from_boxes is stable.
        boxes = sorted((tuple(int(v) for v in b) for b in found), key=lambda b: -b[2] * b[3])
        return _faces_from_boxes(image_bgr, boxes, [1.0] * len(boxes), self.cfg)


DETECTORS: dict[str, Callable[[DetectorConfig], FaceDetector]] = {
    "blazeface_full": BlazeFaceDetector,
    "blazeface_short": BlazeFaceDetector,
    "haar": HaarDetector,
}


def create_detector(cfg: DetectorConfig | None = None) -> FaceDetector:
    """Build the detector named by ``cfg.type`` (raises ModelError when its files are missing)."""
    cfg = cfg or DetectorConfig()
    return DETECTORS[cfg.type](cfg)
