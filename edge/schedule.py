"""Detection scheduling for video: the expensive multi-scale pyramid on some frames, a cheap re-detection
around the faces of the previous frame on the others (as Frigate-like systems do not run their detector on
every frame). docs/detection.md has the measurements.

``DetectionSchedule.plan(image)`` says whether a frame gets the whole pyramid: the first ``SETTLE`` frames
of a new scene (the first frame, a frame of another size, or many pixels of a small thumbnail changed
outside the windows of the followed faces), and every ``full_every``-th frame after the last pyramid.
``local(image, followed)`` runs BlazeFace short-range once per followed face, on a square window around
it (``window_side``: the face then ~64 px wide in the 128x128 input, where short-range is best), and counts
the faces not found again (they left, or were missed: the caller runs the pyramid on that frame). On a
pyramid frame the followed faces that the pyramid missed (``unfound``) keep their window.
``observe(boxes, full)`` records the faces kept for the frame, whichever way they were found.
``verify(...)`` gives uncertain pyramid finds (weak, or small) a second look in such a window, on any image.

OpenCV is imported by the functions that use it.
"""

from __future__ import annotations

import numpy as np

from edge.blazeface import BlazeFaceModel, iou_one_to_many

WINDOW = 2.0  # window side / face side: room for a few frames of motion, the face ~64 px in 128 px
LARGE_WINDOW = 1.35  # the least window side / face side, for faces whose 2x window would exceed the frame
SETTLE = 2  # frames of a new scene that get the pyramid (a face it missed once may be found in the next)
THUMB = (80, 60)  # scene-change thumbnail (width, height)
CHANGED_LEVEL = 24  # a thumbnail pixel changed when its gray level moved by more than this
SCENE_CHANGE = 0.2  # share of changed thumbnail pixels, outside the followed faces' windows, that is a new scene
FOLLOW_IOU = 0.3  # a face in a window continues the followed face when their boxes overlap this much
MIN_GROWTH = 0.5  # a face does not shrink below this share of its size in one frame


def _thumbnail(image_bgr: np.ndarray) -> np.ndarray:
    import cv2

    small = cv2.resize(image_bgr, THUMB, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.int16)


def window_side(face: float, frame_height: int) -> int:
    """Window side for a face ``face`` px wide: ``WINDOW`` x the face, but no more than needed to hold the
    frame's height (and at least ``LARGE_WINDOW`` x the face): large faces stay large in the window."""
    return int(round(min(WINDOW * face, max(LARGE_WINDOW * face, frame_height))))


def window_patch(image_bgr: np.ndarray, box: np.ndarray, side: int) -> tuple[np.ndarray, int, int]:
    """The ``side`` x ``side`` square around the centre of ``box`` (x0, y0, x1, y1), black outside the
    frame. Returns (patch, x of its corner, y of its corner) in frame pixels."""
    import cv2

    x0 = int(round((box[0] + box[2]) / 2 - side / 2))
    y0 = int(round((box[1] + box[3]) / 2 - side / 2))
    ih, iw = image_bgr.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - iw, y0 + side - ih)
    if pad:
        image_bgr = cv2.copyMakeBorder(image_bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    return image_bgr[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side], x0, y0


def window_run(model: BlazeFaceModel, image_bgr: np.ndarray, box: np.ndarray, min_score: float):
    """``model`` (short-range at its 128x128 input) on the window around ``box`` (x0, y0, x1, y1): its finds
    (boxes, scores, keypoints) in frame pixels, except those under ``MIN_GROWTH`` x the box (a face does not
    halve in one frame: smaller finds are misfires or parts of it)."""
    size = max(box[2] - box[0], box[3] - box[1])
    patch, x0, y0 = window_patch(image_bgr, box, window_side(size, image_bgr.shape[0]))
    b, s, k = model.run(patch, min_score)
    b[:, [0, 2]] += x0
    b[:, [1, 3]] += y0
    k[..., 0] += x0
    k[..., 1] += y0
    ok = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) >= MIN_GROWTH * size
    return b[ok], s[ok], k[ok]


def verify(model: BlazeFaceModel, image_bgr: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
           keypoints: np.ndarray, min_score: float, min_mean: float):
    """A second look at uncertain candidates (a pyramid find under its pass's threshold, or a small box): each
    one's window at the model's own input, where the face is ~64 px. A candidate is kept when the window finds
    it again (IoU >= FOLLOW_IOU) with a score >= ``min_score`` whose mean with the candidate's is >= ``min_mean``;
    it takes the window's box, keypoints and the better score. Misfires of one scale on textures rarely survive
    the other framing (docs/detection.md). Returns (boxes, scores, keypoints, kept mask)."""
    boxes, scores, keypoints = boxes.copy(), scores.copy(), keypoints.copy()
    kept = np.zeros(len(boxes), bool)
    for i, box in enumerate(boxes):
        b, s, k = window_run(model, image_bgr, box, min_score)
        ok = (s + scores[i]) / 2 >= min_mean
        if not ok.any():
            continue
        b, s, k = b[ok], s[ok], k[ok]
        iou = iou_one_to_many(box, b)
        j = int(np.argmax(iou))
        if iou[j] >= FOLLOW_IOU:
            boxes[i], scores[i], keypoints[i], kept[i] = b[j], max(scores[i], s[j]), k[j], True
    return boxes, scores, keypoints, kept


class DetectionSchedule:
    """Which frames get the whole pyramid, and the re-detection of followed faces on the others."""

    def __init__(self, full_every: int, model: BlazeFaceModel, min_score: float):
        """full_every: the pyramid at least every this many frames (1: every frame); model: BlazeFace
        short-range at its own 128x128 input (the window pass); min_score: the preset's threshold."""
        self.full_every, self.model, self.min_score = max(1, int(full_every)), model, min_score
        self.reset()

    def reset(self) -> None:
        """Forget the previous frames (a new video): the next frame gets the pyramid."""
        self.boxes = np.zeros((0, 4), np.float32)  # faces of the previous frame, x0, y0, x1, y1
        self.since_full = 0
        self.frames = self.full_frames = 0
        self._thumb: np.ndarray | None = None
        self._shape: tuple[int, ...] | None = None
        self._settle = 0  # further frames of the current scene that get the pyramid

    def _scene_changed(self, thumb: np.ndarray, shape: tuple[int, ...]) -> bool:
        changed = np.abs(thumb - self._thumb) > CHANGED_LEVEL
        sx, sy = THUMB[0] / shape[1], THUMB[1] / shape[0]
        outside = np.ones_like(changed)
        for x0, y0, x1, y1 in self.boxes:
            pw, ph = (x1 - x0) * (WINDOW - 1) / 2, (y1 - y0) * (WINDOW - 1) / 2
            outside[max(0, int((y0 - ph) * sy)):int(np.ceil((y1 + ph) * sy)),
                    max(0, int((x0 - pw) * sx)):int(np.ceil((x1 + pw) * sx))] = False
        return changed[outside].sum() > SCENE_CHANGE * changed.size

    def plan(self, image_bgr: np.ndarray) -> bool:
        """True when this frame gets the whole pyramid (windows then serve only the followed faces it
        does not find again); call once per frame, before ``local``."""
        thumb = _thumbnail(image_bgr)
        new = self._thumb is None or self._shape != image_bgr.shape or self._scene_changed(thumb, image_bgr.shape)
        if new:  # nothing carries over a cut: windows where faces were would only find ghosts
            self.boxes = np.zeros((0, 4), np.float32)
        settling = self._settle > 0
        self._settle = SETTLE - 1 if new else max(0, self._settle - 1)
        self._thumb, self._shape = thumb, image_bgr.shape
        return new or settling or self.full_every <= 1 or self.since_full + 1 >= self.full_every

    def unfound(self, boxes: np.ndarray) -> np.ndarray:
        """The followed faces that none of ``boxes`` (x0, y0, x1, y1, e.g. the pyramid's) overlaps."""
        if not len(boxes):
            return self.boxes
        return self.boxes[[iou_one_to_many(f, boxes).max() < FOLLOW_IOU for f in self.boxes]].reshape(-1, 4)

    def local(self, image_bgr: np.ndarray, followed: np.ndarray | None = None):
        """Re-detect each followed face (default: all of the previous frame) in its window.

        Returns (boxes, scores, keypoints in frame pixels, lost): ``lost`` counts the followed faces not
        found again (they left, or were missed: the caller runs the pyramid)."""
        all_b, all_s, all_k, lost = [], [], [], 0
        for box in self.boxes if followed is None else followed:
            b, s, k = window_run(self.model, image_bgr, box, self.min_score)
            if not len(b) or iou_one_to_many(box, b).max() < FOLLOW_IOU:
                lost += 1
                continue
            all_b.append(b), all_s.append(s), all_k.append(k)
        if not all_b:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 6, 2), np.float32), lost
        return np.concatenate(all_b), np.concatenate(all_s), np.concatenate(all_k), lost

    def observe(self, boxes: np.ndarray, full: bool) -> None:
        """Record the frame's merged faces (x0, y0, x1, y1) and whether the pyramid found them."""
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self.frames += 1
        self.full_frames += int(full)
        self.since_full = 0 if full else self.since_full + 1

    def full_share(self) -> float:
        """Share of the frames so far that ran the pyramid."""
        return self.full_frames / max(self.frames, 1)
