"""Attention signals from face landmarks: eye closure (PERCLOS, blinks, long closures), yawns, head pose.

Per tracked face per frame, the daemon (or ``fer-edge analyze --attention``) calls::

    from edge.attention import AttentionConfig, AttentionState, FaceLandmarker, measure

    landmarker = FaceLandmarker(threads=1)             # once: MediaPipe face_landmark.tflite, 468 points
    state = AttentionState(AttentionConfig())          # once per tracked face
    lm = landmarker.landmarks(frame_bgr, face.box, face.eyes)   # box (x, y, w, h) and eyes in frame pixels
    if lm.score >= state.cfg.min_face_score:           # below: the model sees no face in the crop
        events = state.update(measure(lm.points, (width, height)), ts)   # ts: seconds
        snap = state.snapshot()

``events``: dicts ``{"type": "blink" | "long_closure" | "yawn" | "off_road", "start": ts, "duration": s}``.
``snap``: eye_openness [left, right] 0..1, eyes_closed, closed_s, mouth_open 0..1, yaw/pitch/roll (degrees,
AFLW2000-3D convention), perclos, blinks_per_min, long_closures_per_min, yawns, off_road_s, baseline_ear, and
the flags drowsy, distracted, yawning (thresholds in ``AttentionConfig``). ``lm.box()`` / ``lm.eyes()`` give
the next frame's crop when the detector does not run on it.

Modules: ``landmarks`` (the model and its crop), ``signals`` (pure functions: EAR, MAR, openness, head pose,
off-road), ``state`` (``measure``, ``AttentionState``), ``config`` (``AttentionConfig``). Formulas and sources:
docs/attention.md. Layer: after detect (it takes a detector's box), before track/publish; no TensorFlow.
"""

from edge.attention.config import AttentionConfig
from edge.attention.landmarks import FaceLandmarker, Landmarks
from edge.attention.state import AttentionState, FaceSignals, measure

__all__ = ["AttentionConfig", "AttentionState", "FaceLandmarker", "FaceSignals", "Landmarks", "measure"]
