"""Shared pytest fixtures. Append new fixtures; do not rewrite (several helpers add to this file)."""

from __future__ import annotations

import numpy as np
import pytest

# --------------------------------------------------------------------------- device pipeline fixtures

# Where the face is in skimage.data.astronaut() (512x512), x, y, w, h, checked by eye once:
# forehead at the hairline to the chin, ear to ear.
ASTRONAUT_FACE = (170, 60, 115, 125)


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """skimage's astronaut (NASA portrait of Eileen Collins, public domain) as a BGR frame."""
    cv2 = pytest.importorskip("cv2")
    data = pytest.importorskip("skimage.data")
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def box_iou(a, b) -> float:
    """IoU of two (x, y, w, h) boxes."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union else 0.0
