"""The classifier's input: a 48x48 grayscale crop of a face box, rotated upright from the eyes when they tilt.

FER2013's faces are not level (their own eye lines tilt by ~10 degrees either way), and the classifier learnt them
so: rotating a face level helps when it is tilted well beyond that, and costs a little when it is not. Between
ALIGN_MIN_DEG and ALIGN_FULL_DEG the tilt does not tell which it is, so the face is classified both ways and the two
probability vectors averaged (``face_views``); from ALIGN_FULL_DEG on, only the rotated crop is (docs/detection.md).

OpenCV is imported by the functions that use it.
"""

from __future__ import annotations

import numpy as np

CROP_SIZE = 48
ALIGN_MIN_DEG = 5.0  # eye-line tilts below this are keypoint noise: the crop is left as it is
ALIGN_FULL_DEG = 20.0  # from this tilt on the rotated crop alone is classified; below it, both views
ALIGN_MAX_DEG = 45.0  # beyond this the keypoints are more likely wrong than the face that tilted


def eye_angle(eyes) -> float:
    """Tilt of the eye line in degrees (positive: the subject's left eye, on the image's right, is lower)."""
    (rx, ry), (lx, ly) = eyes
    return float(np.degrees(np.arctan2(ly - ry, lx - rx)))


def crop_face(image_bgr: np.ndarray, box: tuple[int, int, int, int], margin: float, eyes=None,
              lift: float = 0.0, min_deg: float | None = None) -> np.ndarray:
    """48x48 grayscale crop of ``box`` (x, y, w, h) widened by ``margin`` x size on each side, its centre ``lift`` x
    the box height above the box centre (towards the top of the face when the crop is aligned).

    The crop is square (the classifier was trained on square faces, so
    stretching would distort expressions); parts outside the frame repeat the border pixels.
    ``eyes`` ((x, y) right eye, (x, y) left eye, frame pixels): rotate the face upright about the crop
    centre first, when the eye line tilts by ``min_deg`` (default ALIGN_MIN_DEG)..ALIGN_MAX_DEG; otherwise the crop
    is the unrotated one, unchanged.
    """
    import cv2

    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * margin)
    gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY) if image_bgr.ndim == 3 else image_bgr
    angle = eye_angle(eyes) if eyes is not None else 0.0
    aligned = (ALIGN_MIN_DEG if min_deg is None else min_deg) <= abs(angle) <= ALIGN_MAX_DEG
    # The face's "up" in image coordinates (y down): (0, -1) rotated by the eye line's tilt when aligning.
    up = np.radians(angle) if aligned else 0.0
    cx, cy = x + w / 2.0 + lift * h * np.sin(up), y + h / 2.0 - lift * h * np.cos(up)
    if aligned:
        # Cut a square big enough for any rotation, shrink it so the face side becomes 48 px
        # (area averaging, as below), rotate about its centre, keep the middle 48x48.
        big = int(np.ceil(side * np.sqrt(2.0))) + 2
        patch = _square_patch(gray, cx, cy, big)
        out = int(np.ceil(CROP_SIZE * big / side))
        interp = cv2.INTER_AREA if big > out else cv2.INTER_LINEAR
        small = cv2.resize(patch, (out, out), interpolation=interp)
        rot = cv2.getRotationMatrix2D((out / 2.0, out / 2.0), angle, 1.0)
        rot[:, 2] += CROP_SIZE / 2.0 - out / 2.0
        return cv2.warpAffine(small, rot, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    patch = _square_patch(gray, cx, cy, side)
    interp = cv2.INTER_AREA if patch.shape[0] > CROP_SIZE else cv2.INTER_LINEAR
    return cv2.resize(patch, (CROP_SIZE, CROP_SIZE), interpolation=interp)


def face_views(image_bgr: np.ndarray, box: tuple[int, int, int, int], margin: float, eyes=None,
               lift: float = 0.0) -> tuple[np.ndarray, np.ndarray | None]:
    """The crops the classifier sees for one face: (crop, upright). ``crop``: unrotated, or rotated upright when the
    eye line tilts by ALIGN_FULL_DEG..ALIGN_MAX_DEG; ``upright``: for a tilt of ALIGN_MIN_DEG..ALIGN_FULL_DEG, the
    crop rotated upright, whose probabilities are averaged with ``crop``'s; else None. ``eyes`` None: no rotation."""
    crop = crop_face(image_bgr, box, margin, eyes, lift, min_deg=ALIGN_FULL_DEG)
    tilt = abs(eye_angle(eyes)) if eyes is not None else 0.0
    if ALIGN_MIN_DEG <= tilt < ALIGN_FULL_DEG:
        return crop, crop_face(image_bgr, box, margin, eyes, lift, min_deg=ALIGN_MIN_DEG)
    return crop, None


def _square_patch(gray: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
    """The ``side`` x ``side`` square centred on (cx, cy); outside the frame repeats the border."""
    import cv2

    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    x1, y1 = x0 + max(1, int(round(side))), y0 + max(1, int(round(side)))
    ih, iw = gray.shape[:2]
    pad = max(0, -x0, -y0, x1 - iw, y1 - ih)
    if pad:
        gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return gray[y0 + pad : y1 + pad, x0 + pad : x1 + pad]
