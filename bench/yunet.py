"""YuNet (OpenCV Zoo's face detector, ``cv2.FaceDetectorYN``, ONNX, float) as a candidate against BlazeFace: the
same ``bench e2e`` video and scoring, and a classroom frame of many small faces at 1280x720.

YuNet is not shipped: ``--yunet PATH`` points at the .onnx (``face_detection_yunet_2023mar.onnx``); the numbers
are in docs/detection.md. Crops for the classifier come from YuNet's box and eye landmarks with fer-edge's margin
(``edge.crop.crop_face``), so its end-to-end accuracy is comparable too.
"""

from __future__ import annotations

import time

import numpy as np

from bench.common import maxrss_kib

SCORE = 0.9  # OpenCV Zoo's demo threshold
NMS = 0.3


def yunet_faces(det, image: np.ndarray) -> tuple[list[tuple[int, int, int, int]], list, list[float]]:
    """(boxes x, y, w, h; eyes ((x, y) right eye, (x, y) left eye); scores) of one frame, best first."""
    h, w = image.shape[:2]
    det.setInputSize((w, h))
    _, rows = det.detect(image)
    if rows is None:
        return [], [], []
    rows = rows[np.argsort(-rows[:, 14])]
    boxes = [tuple(int(round(v)) for v in r[:4]) for r in rows]
    eyes = [((float(r[4]), float(r[5])), (float(r[6]), float(r[7]))) for r in rows]
    return boxes, eyes, [float(r[14]) for r in rows]


def create_yunet(model: str, score: float = SCORE, threads: int = 1):
    """A ``cv2.FaceDetectorYN`` for ``model`` (ModelError when this OpenCV cannot load it)."""
    import cv2

    from edge.errors import ModelError

    cv2.setNumThreads(threads)
    if not hasattr(cv2, "FaceDetectorYN"):
        raise ModelError("this OpenCV has no FaceDetectorYN: pip install 'opencv-python-headless>=4.8'")
    try:
        return cv2.FaceDetectorYN.create(model, "", (640, 480), score, NMS, 5000)
    except cv2.error as exc:
        raise ModelError(f"YuNet model {model} cannot be loaded ({str(exc).strip().splitlines()[-1]}): pass the "
                         "face_detection_yunet_2023mar.onnx file") from None


def truth_yunet_worker(video: str, threads: int, yunet: str, score: float = SCORE, model: str | None = None,
                       min_size: int = 32) -> dict:
    """YuNet on ``video`` frame by frame, then fer-edge's crop and classifier: the same record as
    ``bench.e2e_truth.truth_ours_worker``."""
    import cv2

    from edge.classify import ExpressionClassifier, ModelConfig
    from edge.crop import crop_face

    det = create_yunet(yunet, score, threads)
    clf = ExpressionClassifier(ModelConfig(path=model, accelerator="cpu", threads=threads))
    cap = cv2.VideoCapture(video)
    frames, det_s = [], 0.0
    t0 = time.perf_counter()
    while True:
        ok, image = cap.read()
        if not ok:
            break
        t1 = time.perf_counter()
        boxes, eyes, _ = yunet_faces(det, image)
        det_s += time.perf_counter() - t1
        keep = [i for i, b in enumerate(boxes) if min(b[2], b[3]) >= min_size]
        crops = [crop_face(image, boxes[i], 0.1, eyes[i]) for i in keep]
        labels = clf.classify_batch(crops).argmax(axis=1) if crops else []
        frames.append([[*boxes[i], int(lab)] for i, lab in zip(keep, labels)])
    dt = time.perf_counter() - t0
    cap.release()
    n = max(len(frames), 1)
    return {"frames": frames, "fps": len(frames) / dt, "detect_ms": 1000 * det_s / n, "stages_ms": {},
            "detector": f"YuNet {score:g} (float, OpenCV DNN)", "margin": 0.1, "lift": 0.0,
            "threads": threads, "maxrss_kib": maxrss_kib()}
