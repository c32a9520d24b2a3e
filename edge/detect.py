"""Face detection: BlazeFace (MediaPipe's TFLite models, decoded in numpy) at one or several scales, or an
OpenCV Haar fallback.

Each detector turns a BGR frame into ``Face`` records: the face box in pixels, a score, the eye
keypoints, and a 48x48 grayscale crop ready for the expression classifier (rotated upright from the
eyes when ``align`` is on). Registry: ``DETECTORS``; presets by use: ``PRESETS``.

OpenCV is imported by the functions that use it, so loading the config (``fer-edge monitor``)
does not load it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.blazeface import (  # noqa: F401  (re-exported: the detector's building blocks)
    BLAZEFACE_SPECS,
    BlazeFaceModel,
    merge_detections,
    ssd_anchor_centers,
    suppress_contained,
    weighted_nms,
)
from edge.crop import ALIGN_MAX_DEG, ALIGN_MIN_DEG, CROP_SIZE, crop_face, eye_angle, face_views  # noqa: F401  (re-exported)
from edge.errors import ModelError
from edge.int8 import load_edgetpu_delegate
from edge.manifest import MODELS_DIR
from edge.presets import (  # noqa: F401  (re-exported)
    MIN_INPUT_PX, MIN_SIZE, PRESETS, SURE, VERIFY_MEAN, VERIFY_PX, Pass, Preset,
)
from edge.schedule import DetectionSchedule, verify

log = logging.getLogger(__name__)
# FER2013's crop centre sits a median 0.095 (quartiles 0.05-0.13) of BlazeFace's box height above the box centre
# (3,558 PublicTest faces pasted at 90-320 px, `auto`); lifting the crop by 0.1 took mini_xception on them from
# 63.86% to 64.87% (the 48x48 images themselves: 66.17%). docs/detection.md.
BLAZEFACE_LIFT = 0.1


DETECTOR_TYPES = ("auto", "classroom", "driver", "blazeface_full", "blazeface_short", "blazeface_back", "haar")


class DetectorConfig(BaseModel):
    """``[detector]`` config section.

    ``type`` names a preset by use (``auto``: faces from ~50 px to frame-filling, the default;
    ``classroom``: many small faces; ``driver``: one near face) or a single model
    (``blazeface_full``, ``blazeface_short``, ``blazeface_back``, ``haar``). ``full_every``: how often a
    video frame gets every pass of a multi-pass preset (windows around the followed faces between).
    ``precision``: the short-range passes run the int8 model or the float one (``auto``: int8 on an Edge TPU, float
    on the CPU); ``accelerator``: where the int8 model runs. See docs/detection.md.
    """

    model_config = ConfigDict(extra="forbid")
    type: Literal["auto", "classroom", "driver", "blazeface_full", "blazeface_short", "blazeface_back", "haar"] = "auto"
    # Detector confidence (BlazeFace only); None: the preset's own thresholds (0.5 for a single model) and, for auto,
    # its second look at finds from 0.5; a value here is the one threshold of every pass, no second look.
    min_score: float | None = Field(None, ge=0.0, le=1.0)
    # Faces whose box is smaller than this (pixels) are skipped. None: 48, or 32 for a preset whose second look
    # checks small boxes (auto: a FER2013-framed face 70 px wide has a box of 36-60 px, docs/detection.md; the crop
    # is the box + margin, resized to 48).
    min_size: int | None = Field(None, ge=1)
    # Crop context added on each side, as a fraction of the box size. 0.1 matches FER2013's framing:
    # BlazeFace on upscaled FER2013 images gives boxes that need a median margin of 0.08 to
    # reproduce the dataset's crop (300 images measured), so the classifier sees what it learnt on.
    margin: float = Field(0.1, ge=0.0, le=1.0)
    # How far the crop's centre sits above the box centre, in box heights (along the face's own axis when the crop
    # is aligned). None: the detector's (BlazeFace: BLAZEFACE_LIFT; Haar: 0). BlazeFace's box centre is the middle
    # of the inner face, lower than FER2013's crop centre (docs/detection.md), and the classifier learnt that framing.
    lift: float | None = Field(None, ge=-0.5, le=0.5)
    max_faces: int = Field(16, ge=1)
    threads: int = Field(1, ge=1)
    # Rotate each face upright from its eye keypoints before the 48x48 crop (BlazeFace only): from a 20 degree tilt
    # on; at 5-20 degrees the plain and the rotated crop are both classified, probabilities averaged. Measured
    # (`fer-edge bench align`): +4 points on faces tilted by 20 degrees, none lost on upright ones.
    align: bool = True
    # Video schedule of a preset of several passes: the whole pyramid on every N-th frame, on the first frames of
    # a new scene and when a followed face is not found again; on the other frames one 128x128 short-range pass
    # in a window around each face of the previous frame (edge.schedule). 1: every pass on every frame. None:
    # the preset's (auto: 5, about 2x its frame rate at the same recall, docs/detection.md; classroom: 1).
    full_every: int | None = Field(None, ge=1)
    # The short-range passes (every preset's) as the full-integer int8 model (`fer-edge convert-detector`; runs on
    # the Edge TPU or XNNPACK's int8 kernels) or MediaPipe's float model. Full-range and back stay float. "auto":
    # int8 when an Edge TPU is found (only int8 runs there), float on the CPU (on this x86 CPU int8 is no faster, and
    # it finds 1-2 points fewer small faces: docs/detection.md).
    precision: Literal["auto", "int8", "float"] = "auto"
    # Where the int8 model runs: "auto" (the Edge TPU when one is found, else the CPU), "tpu" or "cpu". None: as
    # [model] accelerator in a config file, "auto" for a detector built alone. Float models always run on the CPU.
    accelerator: Literal["auto", "tpu", "cpu"] | None = None
    device: str | None = None  # Edge TPU selector as [model] device (None: as [model], or the first found)


@dataclass
class Face:
    """One detected face."""

    box: tuple[int, int, int, int]  # x, y, w, h in pixels of the frame
    score: float
    crop: np.ndarray  # 48x48 uint8 grayscale
    # Eye centres in frame pixels ((x, y) of the subject's right eye, then left eye), when the
    # detector gives keypoints (BlazeFace); None for Haar.
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None
    # With ``align``, for an eye-line tilt of 5-20 degrees: the crop rotated upright, a second view the classifier
    # averages with ``crop`` (edge.crop.face_views); None otherwise.
    upright: np.ndarray | None = None


# --------------------------------------------------------------------------- boxes


def _clip_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = max(0, int(round(x0))), max(0, int(round(y0)))
    x1, y1 = min(width, int(round(x1))), min(height, int(round(y1)))
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def _faces_from_boxes(
    image_bgr: np.ndarray, boxes: list[tuple[int, int, int, int]], scores: list[float], cfg: DetectorConfig,
    eyes: list | None = None, min_size: int = MIN_SIZE, lift: float = 0.0,
) -> list[Face]:
    """Apply min_size (``cfg.min_size`` when set) / max_faces and cut the crops (aligned when ``cfg.align`` and eyes
    are known; centre ``lift`` box heights above the box's), best score first."""
    import cv2

    min_size = cfg.min_size or min_size
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    faces = []
    gray = None  # the frame in gray, once for all its crops (not once per face and view)
    for i in order:
        box = boxes[i]
        if min(box[2], box[3]) < min_size:
            continue
        if gray is None:
            gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
        e = eyes[i] if eyes is not None else None
        crop, upright = face_views(gray, box, cfg.margin, e if cfg.align else None, lift)
        faces.append(Face(box=tuple(int(v) for v in box), score=float(scores[i]), crop=crop, eyes=e, upright=upright))
        if len(faces) >= cfg.max_faces:
            break
    return faces


# --------------------------------------------------------------------------- BlazeFace


class FaceDetector:
    """Base class: ``detect(image_bgr) -> list[Face]``; ``timings_ms`` holds the last call's stages."""

    # Crop centre above the box centre, in box heights, when the config does not set one (DetectorConfig.lift).
    default_lift = 0.0

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self.timings_ms: dict[str, float] = {}
        self.lift = self.default_lift if cfg.lift is None else cfg.lift

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 HxWx3 frame, best score first."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for logs, ``doctor`` and the stats payload."""
        return self.cfg.type

    def detect_frame(self, image_bgr: np.ndarray) -> list[Face]:
        """Faces in the next frame of a video: may use what the previous frames found (the schedule of
        the multi-pass presets); ``reset()`` before another video. Here: ``detect``."""
        return self.detect(image_bgr)

    def reset(self) -> None:
        """Forget the previous frames of ``detect_frame`` (a new video or camera)."""

    def schedule_stats(self) -> dict:
        """The video schedule for the stats payload: {"full_every", "full_share"}, or {} without one."""
        return {}


class BlazeFaceDetector(FaceDetector):
    """BlazeFace passes (one model on the whole frame, or a preset of several scales), merged.

    ``cfg.type`` is a preset name (``auto``, ``classroom``, ``driver``) or one model
    (``blazeface_full``, ``blazeface_short``, ``blazeface_back``: that model on the whole frame).
    """

    default_lift = BLAZEFACE_LIFT

    def __init__(self, cfg: DetectorConfig, model_dir: Path = MODELS_DIR):
        super().__init__(cfg)
        if cfg.type in PRESETS:
            self.preset = PRESETS[cfg.type]
        else:
            self.preset = Preset((Pass(cfg.type),), 0.5, "one model on the whole frame")
        self.min_score = self.preset.min_score if cfg.min_score is None else cfg.min_score
        # A threshold set in the config is the threshold: no second look below it.
        self.verify_from = self.preset.verify_from if cfg.min_score is None else None
        self.model_dir = Path(model_dir)
        self.accelerator = self._accelerator() if cfg.precision in ("int8", "auto") else "cpu"
        if cfg.precision == "auto":  # int8 only where it runs on the Edge TPU
            self.precision = "int8" if self.accelerator == "tpu" else "float"
        else:
            self.precision = cfg.precision
        self._models: dict[tuple, BlazeFaceModel] = {}
        for p in self.preset.passes:  # load now: a missing file fails at start, not on the first frame
            self._model(p, 640, 480)
        # Video schedule (presets of several passes): the window pass is short-range at its own 128x128.
        every = self.preset.full_every if cfg.full_every is None else cfg.full_every
        self.schedule = (DetectionSchedule(every, self._model(Pass("blazeface_short"), 640, 480), self.min_score)
                         if len(self.preset.passes) > 1 and every > 1 else None)

    def _accelerator(self) -> str:
        """"tpu" or "cpu" for the int8 models: "auto" looks for an Edge TPU once (not once per pass)."""
        acc = self.cfg.accelerator or "auto"
        if acc != "auto":
            return acc
        try:
            load_edgetpu_delegate(self.cfg.device)
        except ModelError as exc:
            what = "int8 detector on the CPU" if self.cfg.precision == "int8" else "float detector (no Edge TPU)"
            log.info("%s: %s", what, str(exc).split(";")[0])
            return "cpu"
        return "tpu"

    def _model(self, p: Pass, width: int, height: int) -> BlazeFaceModel:
        shape = p.shape(width, height)
        name = p.model
        if self.precision == "int8" and f"{name}_int8" in BLAZEFACE_SPECS:
            name = f"{name}_int8"
        key = (name, shape)
        if key not in self._models:
            self._models[key] = BlazeFaceModel(name, self.cfg.threads, self.model_dir, shape, self.accelerator,
                                               self.cfg.device)
        return self._models[key]

    def backends(self) -> dict[str, str]:
        """Where each loaded model runs: {"<model> <w>x<h>": "edgetpu" | "cpu"} (for doctor and stats)."""
        out = {}
        for (name, shape), m in self._models.items():
            h, w = shape or (m.spec.input_size,) * 2
            out[f"{name.replace('blazeface_', '')} {w}x{h}"] = m.backend
        return out

    def describe(self) -> str:
        passes = " + ".join(p.label() for p in self.preset.passes)
        every = f"; pyramid every {self.schedule.full_every} frames, windows between" if self.schedule else ""
        second = f"; second look from {self.verify_from:g}" if self.verify_from is not None else ""
        where = sorted(set(self.backends().values()))
        runs = f"; {self.precision} on {'+'.join(where)}"
        return f"{self.cfg.type} ({passes}; min_score {self.min_score:g}{second}{every}{runs})"

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 frame: every pass (resize, run, decode, NMS), merged, uncertain finds verified,
        cropped."""
        timings: dict[str, float] = {}
        return self._finish(image_bgr, *self._pyramid(image_bgr, timings), timings)

    def detect_frame(self, image_bgr: np.ndarray) -> list[Face]:
        """The next video frame: the whole pyramid when the schedule says so (or a followed face was not
        found again), otherwise a window pass around each face of the previous frame."""
        if self.schedule is None:
            return self.detect(image_bgr)
        timings: dict[str, float] = {}
        sched = self.schedule
        t0 = time.perf_counter()
        full = sched.plan(image_bgr)
        plan_s = time.perf_counter() - t0
        parts = [self._pyramid(image_bgr, timings)] if full else []
        t0 = time.perf_counter()
        # Faces followed from the previous frame that the pyramid missed this time keep their window.
        b, s, k, lost = sched.local(image_bgr, sched.unfound(parts[0][0][parts[0][3] >= SURE]) if parts else None)
        timings["windows"] = 1000.0 * (time.perf_counter() - t0 + plan_s)
        parts.append((b, s, k, np.full(len(b), SURE)))  # a window's find is a second look already
        if lost and not full:  # a face left, or its window missed it: look at the whole frame
            full = True
            parts.append(self._pyramid(image_bgr, timings))
        faces = self._finish(image_bgr, *(np.concatenate(x) for x in zip(*parts)), timings)
        sched.observe(np.asarray([(x, y, x + w, y + h) for x, y, w, h in (f.box for f in faces)]), full)
        return faces

    def reset(self) -> None:
        if self.schedule is not None:
            self.schedule.reset()

    def schedule_stats(self) -> dict:
        if self.schedule is None:
            return {}
        return {"full_every": self.schedule.full_every, "full_share": round(self.schedule.full_share(), 3)}

    def _pyramid(self, image_bgr: np.ndarray, timings: dict) -> tuple[np.ndarray, ...]:
        """Every pass of the preset on the whole frame: (boxes, scores, keypoints, tags) in frame pixels, unmerged;
        ``tags``: bit i for the i-th pass, plus SURE when the find passed its pass's threshold (the others are
        candidates for a second look)."""
        ih, iw = image_bgr.shape[:2]
        all_b, all_s, all_k, all_tags = [], [], [], []
        finest = max(p.input_scale(iw, ih) for p in self.preset.passes)
        for i, p in enumerate(self.preset.passes):
            t0 = time.perf_counter()
            thr = self.min_score if p.min_score is None or self.cfg.min_score is not None else p.min_score
            lowest = thr if self.verify_from is None else min(thr, self.verify_from)
            b, s, k = self._model(p, iw, ih).run(image_bgr, lowest)
            scale = p.input_scale(iw, ih)
            if scale < finest:  # faces this small in this pass's input are the finer pass's job
                ok = np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) * scale >= self.preset.min_input_px
                b, s, k = b[ok], s[ok], k[ok]
            all_b.append(b), all_s.append(s), all_k.append(k), all_tags.append(np.where(s >= thr, SURE, 0) | (1 << i))
            timings[p.label()] = timings.get(p.label(), 0.0) + 1000.0 * (time.perf_counter() - t0)
        return tuple(np.concatenate(x) for x in (all_b, all_s, all_k, all_tags))

    def _merge(self, image_bgr: np.ndarray, b: np.ndarray, s: np.ndarray, k: np.ndarray, tags: np.ndarray,
               timings: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weighted NMS over every pass; without a second look (verify_from None) only sure finds came in. With
        one, a group is kept as it is when a sure find joined it or two passes found it, and its box is at least
        VERIFY_PX; any other is kept only when its window finds it again (edge.schedule.verify). Then boxes
        mostly inside a better one go."""
        if self.verify_from is None or not len(b):
            if self.verify_from is not None:
                timings["verify"] = 0.0
            return merge_detections(b, s, k)
        boxes, scores, kps, tags = weighted_nms(b, s, 0.3, k, np.asarray(tags, np.int64))
        passes = np.array([bin(int(t) & (SURE - 1)).count("1") for t in tags])
        sure = (tags >= SURE) | (passes >= 2)
        doubt = ~sure | (np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) < VERIFY_PX)
        t0 = time.perf_counter()
        if doubt.any():
            model = self._model(Pass("blazeface_short"), 640, 480)  # the native pass: 128x128, square windows
            vb, vs, vk, ok = verify(model, image_bgr, boxes[doubt], scores[doubt], kps[doubt], self.min_score, VERIFY_MEAN)
            boxes[doubt], scores[doubt], kps[doubt] = vb, vs, vk
            keep = ~doubt
            keep[np.flatnonzero(doubt)[ok]] = True
            boxes, scores, kps = boxes[keep], scores[keep], kps[keep]
        timings["verify"] = 1000.0 * (time.perf_counter() - t0)
        keep = suppress_contained(boxes, scores)
        return boxes[keep], scores[keep], kps[keep]

    def _finish(self, image_bgr: np.ndarray, b: np.ndarray, s: np.ndarray, k: np.ndarray, tags: np.ndarray,
                timings: dict) -> list[Face]:
        """Merge (weighted NMS, second looks, contained boxes), clip, crop; sets ``timings_ms``."""
        ih, iw = image_bgr.shape[:2]
        t0 = time.perf_counter()
        boxes, scores, kps = self._merge(image_bgr, b, s, k, tags, timings)
        px = [_clip_box(x0, y0, x1, y1, iw, ih) for x0, y0, x1, y1 in boxes]
        eyes = [((float(e[0, 0]), float(e[0, 1])), (float(e[1, 0]), float(e[1, 1]))) for e in kps]
        faces = _faces_from_boxes(image_bgr, px, list(scores), self.cfg, eyes, self.preset.min_size, self.lift)
        timings["merge+crop"] = 1000.0 * (time.perf_counter() - t0) - timings.get("verify", 0.0)
        self.timings_ms = timings
        return faces


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
            cv2.equalizeHist(gray), scaleFactor=1.1, minNeighbors=5, minSize=(self.cfg.min_size or MIN_SIZE,) * 2
        )
        # Larger faces first: all scores tie and the sort in _faces_from_boxes is stable.
        boxes = sorted((tuple(int(v) for v in b) for b in found), key=lambda b: -b[2] * b[3])
        return _faces_from_boxes(image_bgr, boxes, [1.0] * len(boxes), self.cfg, lift=self.lift)


DETECTORS: dict[str, Callable[[DetectorConfig], FaceDetector]] = {
    **{name: BlazeFaceDetector for name in (*PRESETS, *(n for n, s in BLAZEFACE_SPECS.items() if not s.int8))},
    "haar": HaarDetector,
}


def create_detector(cfg: DetectorConfig | None = None) -> FaceDetector:
    """Build the detector named by ``cfg.type`` (raises ModelError when its files are missing)."""
    cfg = cfg or DetectorConfig()
    return DETECTORS[cfg.type](cfg)
