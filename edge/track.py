"""Per-face tracking: stable ids across frames and a smoothed, flicker-free expression per face."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edge.detect import Face
from edge.int8 import top_classes


class TrackerConfig(BaseModel):
    """``[tracker]`` config section."""

    model_config = ConfigDict(extra="forbid")
    iou_threshold: float = Field(0.3, ge=0.0, le=1.0)  # a face continues a track when their boxes overlap this much
    expire_s: float = Field(2.0, gt=0.0)  # a track unmatched for longer is dropped
    smoothing: float = Field(0.4, gt=0.0, le=1.0)  # weight of the new observation in the running scores
    hysteresis: float = Field(0.1, ge=0.0, le=1.0)  # a new top class must beat the reported one by this much
    min_hits: int = Field(2, ge=1)  # matched frames before a track is reported


@dataclass
class Track:
    """A tracked face as reported by ``FaceTracker.update``."""

    face_id: int
    box: tuple[int, int, int, int]  # x, y, w, h in pixels, from the latest matched detection
    scores: np.ndarray  # smoothed probabilities [len(labels)]
    expression: str  # reported label ("" until the track has min_hits)
    confidence: float  # smoothed score of the reported label
    changed: bool  # True on the update where the reported expression changed (including the first report)
    hits: int  # frames in which a face was matched to this track
    last_seen: float  # ts of the latest match (== the update's ts when the face was seen in this frame)


def iou_matrix(a: Sequence[tuple[int, int, int, int]], b: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """IoU [len(a), len(b)] of (x, y, w, h) boxes."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float32)
    A = np.asarray(a, np.float32)[:, None, :]
    B = np.asarray(b, np.float32)[None, :, :]
    iw = np.clip(np.minimum(A[..., 0] + A[..., 2], B[..., 0] + B[..., 2]) - np.maximum(A[..., 0], B[..., 0]), 0, None)
    ih = np.clip(np.minimum(A[..., 1] + A[..., 3], B[..., 1] + B[..., 3]) - np.maximum(A[..., 1], B[..., 1]), 0, None)
    inter = iw * ih
    union = A[..., 2] * A[..., 3] + B[..., 2] * B[..., 3] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, col) pairs, best IoU first, each row and column used once, IoU >= threshold."""
    pairs = []
    if iou.size == 0:
        return pairs
    rows, cols = np.unravel_index(np.argsort(-iou, axis=None, kind="stable"), iou.shape)
    used_r, used_c = set(), set()
    for r, c in zip(rows.tolist(), cols.tolist()):
        if iou[r, c] < threshold or iou[r, c] <= 0:
            break
        if r in used_r or c in used_c:
            continue
        used_r.add(r)
        used_c.add(c)
        pairs.append((r, c))
    return pairs


class FaceTracker:
    """Associates detections over frames and smooths each face's scores.

    ``update`` takes one frame's faces with their classifier scores and returns the confirmed
    tracks (at least ``min_hits`` matches, not expired), including faces missed in this frame but
    seen within ``expire_s`` (their ``last_seen`` is older than ``ts``).
    """

    def __init__(self, cfg: TrackerConfig | None, labels: list[str], prior: list[float] | None = None):
        """cfg: tracker settings; labels: the model's class names; prior: the manifest's
        ``class_prior`` (breaks ties between equal scores), or None for plain argmax."""
        self.cfg = cfg or TrackerConfig()
        self.labels = list(labels)
        self.prior = prior
        self._tracks: list[Track] = []
        self._next_id = 1

    def _report(self, t: Track) -> None:
        """Update the reported expression of ``t`` with hysteresis; sets ``t.changed``."""
        t.changed = False
        if t.hits < self.cfg.min_hits or not self.labels:  # no labels: [model] emotions = false, boxes only
            return
        top = top_classes(t.scores, self.prior)
        if not t.expression:
            t.expression, t.changed = self.labels[top], True
        else:
            cur = self.labels.index(t.expression)
            if top != cur and t.scores[top] - t.scores[cur] >= self.cfg.hysteresis:
                t.expression, t.changed = self.labels[top], True
        t.confidence = float(t.scores[self.labels.index(t.expression)])

    def update(self, faces: list[Face], scores: np.ndarray, ts: float) -> list[Track]:
        """Feed one frame: ``faces`` from the detector, ``scores`` [len(faces), len(labels)], ``ts`` unix seconds.

        Returns copies of the confirmed live tracks, ordered by face_id.
        """
        scores = np.asarray(scores, np.float32).reshape(len(faces), len(self.labels))
        for t in self._tracks:
            t.changed = False
        pairs = greedy_match(iou_matrix([t.box for t in self._tracks], [f.box for f in faces]), self.cfg.iou_threshold)
        matched_faces = set()
        a = self.cfg.smoothing
        for ti, fi in pairs:
            t = self._tracks[ti]
            t.box = tuple(faces[fi].box)
            t.scores = (1.0 - a) * t.scores + a * scores[fi]
            t.hits += 1
            t.last_seen = ts
            self._report(t)
            matched_faces.add(fi)
        for fi, face in enumerate(faces):
            if fi in matched_faces:
                continue
            t = Track(self._next_id, tuple(face.box), scores[fi].copy(), "", 0.0, False, 1, ts)
            self._next_id += 1
            self._report(t)
            self._tracks.append(t)
        self._tracks = [t for t in self._tracks if ts - t.last_seen <= self.cfg.expire_s]
        live = [t for t in self._tracks if t.hits >= self.cfg.min_hits]
        return [dataclasses.replace(t, scores=t.scores.copy()) for t in sorted(live, key=lambda t: t.face_id)]

    @property
    def tracks(self) -> list[Track]:
        """All tracks held, confirmed or not (read-only view for stats)."""
        return list(self._tracks)
