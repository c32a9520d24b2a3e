"""Attention signals as small pure functions over one face's landmarks (MediaPipe's 468-point mesh).

Indices are those of MediaPipe's canonical face mesh (``mesh_map.jpg`` in the MediaPipe repository).
"Right" and "left" are the subject's: the right eye is on the image's left in a frontal face.
"""

from __future__ import annotations

import numpy as np

# Eye contours for the eye aspect ratio, in Soukupova & Cech's order p1..p6: outer corner, two upper-lid
# points, inner corner, two lower-lid points (p2 above p6, p3 above p5).
RIGHT_EYE = (33, 160, 158, 133, 153, 144)
LEFT_EYE = (263, 387, 385, 362, 380, 373)
# Inner lips: three upper/lower pairs and the two mouth corners.
MOUTH_PAIRS = ((82, 87), (13, 14), (312, 317))
MOUTH_CORNERS = (78, 308)

# Population eye aspect ratios (iris-model eye contours), measured on the ZJU eyeblink stills of the tuning subjects
# 000001-000005 (bench attention; docs/attention.md): medians of open and of closed eyes. Used when no per-face
# baseline is known (one image) and as the closed-eye floor of ``eye_openness``.
OPEN_EAR = 0.26
CLOSED_EAR = 0.11


def eye_aspect_ratio(points: np.ndarray, eye=RIGHT_EYE) -> float:
    """Eye aspect ratio (EAR) of one eye (T. Soukupova and J. Cech, "Real-Time Eye Blink Detection using
    Facial Landmarks", CVWW 2016):

        EAR = (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)

    points: [468, 2 or 3] landmarks (only x, y are used). eye: RIGHT_EYE or LEFT_EYE (indices p1..p6).
    About 0.25-0.3 for an open eye, near 0.05-0.1 for a closed one; it does not depend on the face's size.
    """
    p = np.asarray(points, np.float64)[list(eye), :2]
    width = np.linalg.norm(p[0] - p[3])
    if width <= 0:
        return 0.0
    return float((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2.0 * width))


def mouth_aspect_ratio(points: np.ndarray) -> float:
    """Mouth aspect ratio (MAR), the EAR's formula on the inner lips (as used for yawns, e.g. in
    B. Reddy et al., "Real-time Driver Drowsiness Detection for Embedded System Using Model
    Compression of Deep Neural Networks", CVPRW 2017):

        MAR = (|u1 - l1| + |u2 - l2| + |u3 - l3|) / (3 |c1 - c2|)

    u/l: upper and lower inner-lip points (MOUTH_PAIRS), c: the mouth corners (MOUTH_CORNERS).
    0 for a closed mouth, about 0.1-0.3 while talking, 0.5 or more in a yawn.
    """
    p = np.asarray(points, np.float64)[:, :2]
    width = np.linalg.norm(p[MOUTH_CORNERS[0]] - p[MOUTH_CORNERS[1]])
    if width <= 0:
        return 0.0
    gap = sum(np.linalg.norm(p[u] - p[lo]) for u, lo in MOUTH_PAIRS)
    return float(gap / (3.0 * width))


def eye_openness(ear: float, baseline: float = OPEN_EAR, closed: float = CLOSED_EAR) -> float:
    """How open an eye is, 0 (closed) .. 1 (as open as its baseline):

        openness = clip((EAR - EAR_closed) / (EAR_open - EAR_closed), 0, 1)

    ear: the eye's EAR now. baseline: EAR_open, the face's own open-eye EAR (``AttentionState`` learns it
    over the face's first seconds) or the population OPEN_EAR. closed: EAR_closed, the EAR of a closed eye
    (the lids' landmarks never meet, so a closed eye's EAR is not 0). PERCLOS P80 counts openness <= 0.2.
    """
    span = baseline - closed
    if span <= 1e-6:
        return 1.0 if ear >= baseline else 0.0
    return float(np.clip((ear - closed) / span, 0.0, 1.0))


def mouth_opening(mar: float, full: float = 1.0) -> float:
    """Mouth opening 0..1: ``clip(MAR / full, 0, 1)``; ``full`` is the MAR taken as wide open (1.0: the
    lips' gap as wide as the mouth)."""
    return float(np.clip(mar / full, 0.0, 1.0))


# A generic 3D face (millimetre-like units; x to the subject's left, y up, z towards the viewer), the six
# points of S. Mallick, "Head Pose Estimation using OpenCV and Dlib" (LearnOpenCV, 2016), with the
# MediaPipe indices of the same points.
FACE_3D = np.array([
    (0.0, 0.0, 0.0),          # nose tip
    (0.0, -330.0, -65.0),     # chin
    (-225.0, 170.0, -135.0),  # right eye, outer corner
    (225.0, 170.0, -135.0),   # left eye, outer corner
    (-150.0, -150.0, -125.0),  # right mouth corner
    (150.0, -150.0, -125.0),  # left mouth corner
], np.float64)
FACE_3D_INDICES = (1, 152, 33, 263, 61, 291)
PNP_FOCAL = 10.0  # focal length in frame widths for head_pose: nearly orthographic (see there)


def euler_from_matrix(r: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in degrees of a head rotation ``r`` (3x3, face model -> camera, OpenCV camera
    axes: x right, y down, z forward), in AFLW2000-3D's ``Pose_Para`` convention (X. Zhu et al., "Face
    Alignment Across Large Poses: A 3D Solution", CVPR 2016; 3DDFA's ``RotationMatrix``):
    ``R = Rx(-pitch) Ry(-yaw) Rz(-roll)`` with right-handed rotations of a y-up, z-towards-the-viewer face.

    So, as in ``aflw2000-subset/labels.csv``: pitch > 0 looks up, yaw > 0 turns the nose towards the image's
    left (the subject's right), roll > 0 tilts the head clockwise in the image.
    """
    # Into the y-up, z-towards-viewer frame of the model and of 3DDFA's projection.
    f = np.diag([1.0, -1.0, -1.0])
    m = f @ r @ f
    # m = Rx(a) Ry(b) Rz(c) with right-handed a, b, c: m[0, 2] = sin(b); AFLW's angles are -a, -b, -c.
    b = np.arcsin(np.clip(m[0, 2], -1.0, 1.0))
    a = np.arctan2(-m[1, 2], m[2, 2])
    c = np.arctan2(-m[0, 1], m[0, 0])
    return float(-np.degrees(a)), float(-np.degrees(b)), float(-np.degrees(c))


def matrix_from_euler(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """The inverse of ``euler_from_matrix``: AFLW2000-3D angles in degrees -> 3x3 rotation (model ->
    OpenCV camera axes)."""
    a, b, c = np.radians([-pitch, -yaw, -roll])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    f = np.diag([1.0, -1.0, -1.0])
    return f @ (rx @ ry @ rz) @ f


def camera_matrix(frame_size: tuple[int, int], center: tuple[float, float] | None = None,
                  focal: float | None = None) -> np.ndarray:
    """A pinhole camera for a (width, height) frame: principal point ``center`` (default the frame's middle),
    focal length ``focal`` pixels (default the width: an uncalibrated webcam's ~53 degree field of view)."""
    w, h = frame_size
    cx, cy = center if center is not None else (w / 2.0, h / 2.0)
    f = float(focal or w)
    return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], np.float64)


def head_pose(points: np.ndarray, frame_size: tuple[int, int]) -> tuple[float, float, float]:
    """Head (pitch, yaw, roll) in degrees from landmarks [468, 2+] in frame pixels of a (width, height) frame.

    ``cv2.solvePnP`` (iterative, Levenberg-Marquardt) fits the generic FACE_3D to the six matching landmarks
    with ``camera_matrix(frame_size)`` and no lens distortion; ``euler_from_matrix`` gives the angles in
    AFLW2000-3D's convention.
    """
    import cv2

    image_pts = np.asarray(points, np.float64)[list(FACE_3D_INDICES), :2]
    # Model axes -> OpenCV's (y down, z away from the camera), so that the identity is a frontal face.
    obj = FACE_3D * np.array([1.0, -1.0, -1.0])
    # The principal point on the nose and a long focal length: the angles are those of the head relative to
    # the line from the camera to the face, wherever the face is in the frame, as AFLW2000-3D's labels (a
    # weak-perspective fit) are. With the frame's own centre a face at the top of the frame looking at the
    # camera would read as looking down.
    cam = camera_matrix(frame_size, center=(image_pts[0, 0], image_pts[0, 1]), focal=PNP_FOCAL * max(frame_size))
    # Start from a frontal face at the distance its eye span implies: from no guess the six points often
    # converge to the mirror solution (the face seen from behind, roll near 180 degrees).
    span = float(np.linalg.norm(image_pts[2] - image_pts[3])) or 1.0
    z = cam[0, 0] * (FACE_3D[3, 0] - FACE_3D[2, 0]) / span
    t0 = np.array([[(image_pts[0, 0] - cam[0, 2]) * z / cam[0, 0]], [(image_pts[0, 1] - cam[1, 2]) * z / cam[1, 1]], [z]])
    ok, rvec, _tvec = cv2.solvePnP(obj, image_pts, cam, None, np.zeros((3, 1)), t0, useExtrinsicGuess=True,
                                   flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return float("nan"), float("nan"), float("nan")
    r, _ = cv2.Rodrigues(rvec)
    return euler_from_matrix(r)


def off_road(yaw: float, pitch: float, yaw_limit: float, pitch_limit: float,
             yaw_center: float = 0.0, pitch_center: float = 0.0) -> bool:
    """True when the head points outside the road cone: ``|yaw - yaw_center| > yaw_limit`` or
    ``|pitch - pitch_center| > pitch_limit`` (degrees; the centres are the pose of a driver looking ahead,
    which depends on where the camera is). NaN angles (no pose) count as off the road."""
    if not (np.isfinite(yaw) and np.isfinite(pitch)):
        return True
    return abs(yaw - yaw_center) > yaw_limit or abs(pitch - pitch_center) > pitch_limit
