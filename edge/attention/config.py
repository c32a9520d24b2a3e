"""``AttentionConfig``: the thresholds of the attention signals, with their sources (docs/attention.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from edge.attention.signals import CLOSED_EAR


class AttentionConfig(BaseModel):
    """Landmark-based attention signals of one tracked face (``AttentionState``)."""

    model_config = ConfigDict(extra="forbid")

    # Per-face open-eye baseline: the given percentile of each eye's EAR over the face's first seconds (blinks
    # are short, so a high percentile is the open eye); the population OPEN_EAR until min_samples are seen.
    baseline_s: float = Field(10.0, gt=0)
    baseline_percentile: float = Field(90.0, ge=50, le=100)
    baseline_min_samples: int = Field(5, ge=1)
    closed_ear: float = Field(CLOSED_EAR, ge=0, lt=1)  # EAR of a closed eye: openness 0
    # Eye closed (blinks, long closures; one image: eyes_closed) below this openness (mean of both eyes), open
    # again at or above closed_below + hysteresis. Chosen on ZJU subjects 000001-000005 only (clips: blink
    # recall 98.4% with no false blinks, the best of 0.4-0.7 x 0.05-0.2; stills: 100%); docs/attention.md.
    closed_below: float = Field(0.60, gt=0, lt=1)
    hysteresis: float = Field(0.1, ge=0, lt=1)
    # PERCLOS P80: share of the last perclos_window_s seconds with the eye >= 80 % closed (openness <= 0.2),
    # Wierwille et al. 1994 / Dinges & Grace 1998 (FHWA-MCRT-98-006), over a one-minute window.
    perclos_closed_below: float = Field(0.2, gt=0, lt=1)
    perclos_window_s: float = Field(60.0, gt=0)
    long_closure_s: float = Field(1.0, gt=0)  # a closure this long is a long closure, not a blink (issue 21)
    # A yawn: mouth aspect ratio >= yawn_mar for >= yawn_min_s (issue 21: 1.5 s).
    yawn_mar: float = Field(0.5, gt=0)
    yawn_min_s: float = Field(1.5, gt=0)
    # Eyes-off-road: the head outside the road cone (degrees, AFLW2000-3D convention), around the pose of a
    # driver looking ahead. yaw_center, pitch_center: that pose, fixed (it depends on where the camera is mounted),
    # or None: learnt per face as the median pose over its first baseline_s (a driver looks at the road most of the
    # time, a pupil at the front; it also takes out the head-pose model's own bias), from its first
    # baseline_min_samples frames on, refined only by frames inside the cone. Until then no off-road time counts.
    yaw_limit: float = Field(30.0, gt=0, le=90)
    pitch_limit: float = Field(20.0, gt=0, le=90)
    yaw_center: float | None = Field(None, ge=-90, le=90)
    pitch_center: float | None = Field(None, ge=-90, le=90)
    # Flags in the snapshot (the lead's alerts read them). drowsy: PERCLOS >= 0.15 (the FHWA studies' drowsy
    # level, Dinges & Grace 1998) or >= 2 long closures in the last minute; distracted: eyes off the road for
    # >= 3.5 s (Regulation (EU) 2023/2590, ADDW, above 50 km/h); yawning: >= 3 yawns in 5 minutes (issue 21).
    drowsy_perclos: float = Field(0.15, gt=0, le=1)
    drowsy_long_closures: int = Field(2, ge=1)
    distracted_s: float = Field(3.5, gt=0)
    yawning_count: int = Field(3, ge=1)
    yawning_window_s: float = Field(300.0, gt=0)
    # Samples further apart than this count only this long (a frame gap is not time with closed eyes).
    max_gap_s: float = Field(0.5, gt=0)
    min_face_score: float = Field(0.5, ge=0, le=1)  # landmarks with a lower face-presence score are skipped
