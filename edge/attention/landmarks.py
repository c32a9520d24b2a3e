"""MediaPipe's face landmark model (468 points) on the TFLite runtime, for one face box at a time.

``FaceLandmarker(threads=1).landmarks(frame_bgr, box, eyes=None)`` -> ``Landmarks`` (points [468, 3] in
frame pixels, z in the same pixel scale, and the face-presence score). The crop follows MediaPipe's
``face_landmark_front`` graph: the detection box, rotated upright from the eye keypoints when they are
given, made square on its long side and enlarged 1.5x (``RectTransformationCalculator`` scale 1.5), then
resized to the model's 192x192 RGB input in 0..1. The model file is vendored float32 (see
edge/models/PROVENANCE.md: no source model to quantise to int8 from).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.int8 import invoke, make_interpreter
from edge.manifest import MODELS_DIR

LANDMARK_MODEL = MODELS_DIR / "face_landmark.tflite"
IRIS_MODEL = MODELS_DIR / "iris_landmark.tflite"
EYE_INPUT = 64
EYE_ROI_SCALE = 2.3  # iris_landmark_left_and_right: the eye-corner rect enlarged 2.3x, square
# The iris model's first 16 eye-contour points (lower lid from the outer to the inner corner, then the upper
# lid) and the face mesh points they replace (MediaPipe's update_face_landmarks), for the subject's right eye
# (as the model sees it) and left eye (mirrored before the model).
RIGHT_EYE_MESH = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
LEFT_EYE_MESH = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
INPUT_SIZE = 192
ROI_SCALE = 1.5  # face_landmark_front: the detection rect enlarged 1.5x, square on its long side
N_POINTS = 468
# Outer eye corners: the subject's right eye (image left in a frontal face), then the left eye. MediaPipe
# rotates the next frame's crop by the line through them (face_landmarks_to_roi).
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263


@dataclass
class Landmarks:
    """One face's landmarks: ``points`` float32 [468, 3] (x, y in frame pixels; z relative depth in
    pixels, negative towards the camera) and ``score``, the model's face-presence probability 0..1."""

    points: np.ndarray
    score: float

    def box(self) -> tuple[int, int, int, int]:
        """The landmarks' bounding box (x, y, w, h) in frame pixels: a tracker's next box for this face."""
        x0, y0 = self.points[:, :2].min(axis=0)
        x1, y1 = self.points[:, :2].max(axis=0)
        return int(round(x0)), int(round(y0)), int(round(x1 - x0)), int(round(y1 - y0))

    def eyes(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(right eye outer corner, left eye outer corner) in frame pixels: the ``eyes`` for the next crop."""
        r, left = self.points[RIGHT_EYE_OUTER], self.points[LEFT_EYE_OUTER]
        return (float(r[0]), float(r[1])), (float(left[0]), float(left[1]))


def roi_transform(box, eyes=None, scale: float = ROI_SCALE, size: int = INPUT_SIZE) -> np.ndarray:
    """The 2x3 affine matrix taking frame pixels to the model's ``size`` x ``size`` input.

    box: (x, y, w, h) face box in frame pixels. eyes: ((x, y) of the subject's right eye, (x, y) of the
    left eye) or None; when given the crop is rotated so that the eye line is horizontal. The crop is the
    square of side ``scale * max(w, h)`` centred on the box.
    """
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2.0, y + h / 2.0
    side = scale * max(w, h)
    angle = 0.0
    if eyes is not None:
        (rx, ry), (lx, ly) = eyes
        angle = float(np.arctan2(ly - ry, lx - rx))  # radians, positive: the left eye (image right) is lower
    k = size / side
    c, s = np.cos(-angle) * k, np.sin(-angle) * k
    # Rotate by -angle about the centre, scale to the input, move the centre to the middle of the input.
    return np.array([[c, -s, size / 2.0 - c * cx + s * cy],
                     [s, c, size / 2.0 - s * cx - c * cy]], np.float64)


def crop_input(frame_bgr: np.ndarray, box, eyes=None) -> tuple[np.ndarray, np.ndarray]:
    """(model input float32 [1, 192, 192, 3] RGB in 0..1, the 2x3 affine matrix frame -> input)."""
    import cv2

    m = roi_transform(box, eyes)
    patch = cv2.warpAffine(frame_bgr, m, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    rgb = cv2.cvtColor(patch, cv2.COLOR_BGR2RGB) if patch.ndim == 3 else cv2.cvtColor(patch, cv2.COLOR_GRAY2RGB)
    return (rgb.astype(np.float32) * np.float32(1.0 / 255.0))[None], m


def to_frame(points_in: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Landmarks [N, 3] in input pixels -> frame pixels (the inverse of ``m``; z scaled like x and y)."""
    a = m[:, :2]
    inv = np.linalg.inv(a)
    xy = (points_in[:, :2] - m[:, 2]) @ inv.T
    z = points_in[:, 2:3] / np.sqrt(abs(np.linalg.det(a)))
    return np.hstack([xy, z]).astype(np.float32)


class EyeRefiner:
    """MediaPipe's iris landmark model (``iris_landmark.tflite``, 64x64 eye crops): eye contours sharper than
    the face mesh's, which barely moves when the lids close (measured: docs/attention.md)."""

    def __init__(self, threads: int = 1, model_path=IRIS_MODEL):
        self.interpreter = make_interpreter(model_path, "cpu", threads=threads).interpreter
        outs = self.interpreter.get_output_details()
        self._contour = next(d for d in outs if int(np.prod(d["shape"])) == 71 * 3)["index"]
        self._input = self.interpreter.get_input_details()[0]["index"]

    def contour(self, frame_bgr: np.ndarray, outer, inner, mirror: bool) -> np.ndarray:
        """The first 16 eye-contour points [16, 3] in frame pixels of the eye between the corners ``outer``
        and ``inner`` (x, y frame pixels); ``mirror`` for the subject's left eye (the model sees right eyes)."""
        import cv2

        outer, inner = np.asarray(outer, np.float64)[:2], np.asarray(inner, np.float64)[:2]
        centre, width = (outer + inner) / 2.0, float(np.linalg.norm(inner - outer))
        left_pt, right_pt = (inner, outer) if mirror else (outer, inner)  # the image-left corner first
        box = (centre[0] - width / 2.0, centre[1] - width / 2.0, width, width)
        m = roi_transform(box, (tuple(left_pt), tuple(right_pt)), EYE_ROI_SCALE, EYE_INPUT)
        patch = cv2.warpAffine(frame_bgr, m, (EYE_INPUT, EYE_INPUT), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        if mirror:
            patch = patch[:, ::-1]
        x = cv2.cvtColor(np.ascontiguousarray(patch), cv2.COLOR_BGR2RGB).astype(np.float32) * np.float32(1 / 255.0)
        invoke(self.interpreter, x[None], self._input)
        pts = self.interpreter.get_tensor(self._contour).reshape(71, 3)[:16].astype(np.float64)
        if mirror:
            pts[:, 0] = EYE_INPUT - pts[:, 0]
        return to_frame(pts, m)

    def refine(self, frame_bgr: np.ndarray, points: np.ndarray) -> np.ndarray:
        """A copy of the face mesh ``points`` [468, 3] with both eyes' lids from the iris model."""
        out = points.copy()
        for mesh, mirror in ((RIGHT_EYE_MESH, False), (LEFT_EYE_MESH, True)):
            c = self.contour(frame_bgr, points[mesh[0]], points[mesh[8]], mirror)
            # The lids' x, y only: the mesh keeps its own depth and its eye corners, which head_pose fits to
            # the 3D face (with the iris model's corners the yaw error on AFLW2000-3D grew from 7.6 to 9.0 deg).
            lids = [i for i in range(16) if i not in (0, 8)]
            out[[mesh[i] for i in lids], :2] = c[lids, :2]
        return out


class FaceLandmarker:
    """The face landmark model on the CPU (float32; the Edge TPU runs only int8 models), and by default the
    iris model for the eye contours (``refine_eyes``), as MediaPipe's ``refine_landmarks`` option does.

    threads: CPU threads for the interpreter. model_path: another ``face_landmark.tflite``.
    """

    def __init__(self, threads: int = 1, model_path=LANDMARK_MODEL, refine_eyes: bool = True):
        self.eyes = EyeRefiner(threads) if refine_eyes else None
        loaded = make_interpreter(model_path, "cpu", threads=threads)
        self.interpreter, self.path = loaded.interpreter, loaded.path
        outs = self.interpreter.get_output_details()
        # Two outputs: 1404 values (468 x, y, z in input pixels) and one face-presence logit.
        self._points = next(d for d in outs if int(np.prod(d["shape"])) == N_POINTS * 3)["index"]
        self._score = next(d for d in outs if int(np.prod(d["shape"])) == 1)["index"]
        self._input = self.interpreter.get_input_details()[0]["index"]

    def landmarks(self, frame_bgr: np.ndarray, box, eyes=None, refine_eyes: bool = True) -> Landmarks:
        """Landmarks of the face in ``box`` (x, y, w, h, frame pixels) of ``frame_bgr``.

        eyes: the detector's eye keypoints (``Face.eyes``) or the previous frame's ``Landmarks.eyes()``,
        to rotate the crop upright; None for an unrotated crop. refine_eyes: False skips the iris model
        (a pass whose points only place the next crop). A ``score`` below 0.5 means the model sees no face
        in the crop (MediaPipe's threshold): its points are then meaningless.
        """
        x, m = crop_input(frame_bgr, box, eyes)
        invoke(self.interpreter, x, self._input)
        raw = self.interpreter.get_tensor(self._points).reshape(N_POINTS, 3)
        logit = float(self.interpreter.get_tensor(self._score).reshape(-1)[0])
        score = float(1.0 / (1.0 + np.exp(-np.clip(logit, -50.0, 50.0))))
        points = to_frame(raw.astype(np.float64), m)
        if self.eyes is not None and refine_eyes and score >= 0.5:
            points = self.eyes.refine(frame_bgr, points)
        return Landmarks(points, score)


def face_landmarks(landmarker: FaceLandmarker, frame_bgr: np.ndarray, face, refine: bool = True,
                   min_score: float = 0.5) -> Landmarks | None:
    """Landmarks of a detected ``face`` (``edge.detect.Face``: its box and eye keypoints), or None when the
    model's face-presence score is below ``min_score``. refine: run the model a second time on the crop
    its own landmarks give (MediaPipe's tracking crop, tighter around the whole face than the detector's
    box); this adds one run of the face model (the iris model runs on the second crop only)."""
    lm = landmarker.landmarks(frame_bgr, face.box, face.eyes, refine_eyes=not refine)
    if lm.score < min_score:
        return None
    if refine:
        again = landmarker.landmarks(frame_bgr, lm.box(), lm.eyes())
        if again.score >= min_score:
            return again
        if landmarker.eyes is not None:  # the second crop lost the face: the first one's, with its eyes
            return Landmarks(landmarker.eyes.refine(frame_bgr, lm.points), lm.score)
    return lm
