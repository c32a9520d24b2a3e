"""fer-edge analyze: expressions of the faces in images, folders and video files, offline.

One record per face per analysed frame, as JSON lines or CSV: path, frame, time in the video,
face index, box, detector score, expression, confidence and the score of every label. No
tracking or smoothing: each frame is judged on its own.

``--attention`` adds per face the landmark signals (edge/attention/, docs/attention.md): eyes_closed,
eye_openness [left, right] 0..1, mouth_open 0..1, yaw, pitch, roll (degrees, AFLW2000-3D convention) and, on
video, attention_events (blinks, long closures, yawns, off-road spells that ended or crossed their threshold
in that frame). On video each face keeps its own open-eye baseline, learned over its first seconds (faces are
followed from frame to frame by box overlap); on a single image there is no baseline and eye openness uses a
population open-eye EAR, so it is less sure for eyes that are narrow or wide by nature.

Boxes are in pixels of the analysed image or frame: [x, y, w, h] from its top-left corner
(CSV columns x, y, w, h). The daemon's MQTT `expression` messages give the box normalised to
0..1 of the frame width and height instead.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from edge.errors import DataError
from edge.int8 import top_classes

# edge.detect.DETECTOR_TYPES, written out so that `--help` does not import OpenCV (a test checks they agree).
DETECTOR_CHOICES = ("auto", "classroom", "driver", "blazeface_full", "blazeface_short", "blazeface_back", "haar")

# cv2 and the pipeline modules are imported when the command runs: `fer-edge --help` stays fast.

log = logging.getLogger(__name__)

VIDEO_EXTS = {".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".h264", ".ts"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``analyze`` options to ``parser``."""
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="image files, video files, or folders (searched recursively for both)")
    parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl",
                        help="output format: one JSON object per line, or CSV with a column per label (default: jsonl)")
    parser.add_argument("-o", "--output", metavar="FILE", default=None,
                        help="write records to FILE instead of standard output")
    parser.add_argument("--model", metavar="TFLITE", default=None,
                        help="expression model .tflite with its .json beside it (default: the shipped mini_xception)")
    parser.add_argument("--accelerator", choices=("auto", "tpu", "cpu"), default="auto",
                        help="run the model on the Edge TPU, the CPU, or the TPU when present (default: auto)")
    parser.add_argument("--device", default=None, help='Edge TPU to use: "usb", "usb:0", "pci", "pci:0" (default: first found)')
    parser.add_argument("--detector", choices=DETECTOR_CHOICES, default="auto",
                        help="face detector preset or model (default: auto, faces ~50 px to frame-filling; classroom: "
                             "many small faces; driver: one near face; see docs/detection.md)")
    parser.add_argument("--precision", choices=("auto", "int8", "float"), default=None,
                        help="the detector's short-range passes as the int8 model (Edge TPU when --accelerator finds "
                             "one, else the CPU) or the float one (default: auto, int8 on an Edge TPU, float on the CPU)")
    parser.add_argument("--no-align", action="store_true",
                        help="crop faces as found, without rotating them upright from the eye keypoints")
    # None: the [detector] defaults of DetectorConfig, kept in one place.
    parser.add_argument("--min-score", type=float, default=None, help="minimum detector confidence (default: the preset's, 0.5 for one model)")
    parser.add_argument("--min-size", type=int, default=None, help="skip faces smaller than this many pixels (default: 48; auto: 32)")
    parser.add_argument("--margin", type=float, default=None,
                        help="context around the face box in the crop, fraction of its size per side (default: 0.1)")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="videos: analyse every N-th frame (default: 1, every frame)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the models (default: 1)")
    parser.add_argument("--attention", action="store_true",
                        help="also give eye closure, mouth opening and head pose per face, and on video the blink "
                             "and yawn events (face landmark model; see docs/attention.md)")


def collect_inputs(paths: list[str]) -> list[Path]:
    """Expand folders (recursively, sorted) into image and video files; raise DataError for missing paths."""
    from edge.camera import IMAGE_EXTS

    files: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
            if not found:
                log.warning("%s has no images or videos", p)
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"{raw} not found: give existing image files, video files or folders")
    return files


def _frames(path: Path, every: int) -> Iterator[tuple[int, float | None, np.ndarray]]:
    """(frame number, time in seconds or None for images, BGR image); raises OSError if unreadable."""
    import cv2

    from edge.camera import IMAGE_EXTS

    if path.suffix.lower() in IMAGE_EXTS:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError("not a readable image")
        yield 0, None, image
        return
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise OSError("not a readable video (unknown format or codec)")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        n = 0
        while True:
            if n % every == 0:
                ok, image = cap.read()
                if not ok:
                    break
                yield n, (round(n / fps, 3) if fps > 0 else None), image
            elif not cap.grab():  # skipped frames: no colour conversion
                break
            n += 1
        if n == 0:
            raise OSError("no decodable frames")
    finally:
        cap.release()


def _is_image(path: Path) -> bool:
    from edge.camera import IMAGE_EXTS

    return path.suffix.lower() in IMAGE_EXTS


def _frame_count(path: Path, every: int) -> int:
    import cv2

    from edge.camera import IMAGE_EXTS

    if path.suffix.lower() in IMAGE_EXTS:
        return 1
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
    cap.release()
    return max(1, -(-n // every))


ATTENTION_COLUMNS = ("eyes_closed", "eye_openness_left", "eye_openness_right", "mouth_open", "yaw", "pitch", "roll",
                     "attention_events")


def _attention_cells(rec: dict) -> list:
    """The CSV cells of ``ATTENTION_COLUMNS`` (empty where the landmark model found no face)."""
    if rec.get("eye_openness") is None:
        return [""] * len(ATTENTION_COLUMNS)
    return [rec["eyes_closed"], *rec["eye_openness"], rec["mouth_open"], rec["yaw"], rec["pitch"], rec["roll"],
            json.dumps(rec.get("attention_events", []))]


class RecordWriter:
    """Writes records as JSON lines or CSV, flushing each so an interrupted run keeps what it did."""

    def __init__(self, stream: IO[str], fmt: str, labels: list[str], attention: bool = False):
        self.stream, self.fmt, self.labels, self.attention = stream, fmt, labels, attention
        self.count = 0
        if fmt == "csv":
            self._csv = csv.writer(stream)
            self._csv.writerow(["path", "frame", "time_s", "face", "x", "y", "w", "h", "detector_score",
                                "expression", "confidence", *labels, *(ATTENTION_COLUMNS if attention else ())])

    def write(self, rec: dict) -> None:
        """Write one record (a dict as built by ``analyze_file``)."""
        if self.fmt == "csv":
            self._csv.writerow([rec["path"], rec["frame"], "" if rec["time_s"] is None else rec["time_s"], rec["face"],
                                *rec["box"], rec["detector_score"], rec["expression"], rec["confidence"],
                                *(rec["scores"][k] for k in self.labels),
                                *(_attention_cells(rec) if self.attention else ())])
        else:
            self.stream.write(json.dumps(rec) + "\n")
        self.stream.flush()
        self.count += 1


class AttentionFaces:
    """``--attention``: the landmark model, and on video one ``AttentionState`` per face, each face matched to
    the previous frame's by box overlap (edge.track's matching; a face unmatched for 2 s starts afresh)."""

    def __init__(self, threads: int = 1):
        from edge.attention import AttentionConfig, FaceLandmarker

        self.cfg = AttentionConfig()
        self.landmarker = FaceLandmarker(threads=threads)
        self._prev: list[tuple[tuple, object, float]] = []  # (box, AttentionState, last seen)

    def reset(self) -> None:
        self._prev = []

    def _states(self, boxes: list, ts: float) -> list:
        from edge.attention import AttentionState
        from edge.track import greedy_match, iou_matrix

        live = [p for p in self._prev if ts - p[2] <= 2.0]
        states = [None] * len(boxes)
        if live and boxes:
            for i, j in greedy_match(iou_matrix(boxes, [p[0] for p in live]), 0.3):
                states[i] = live[j][1]
        states = [s or AttentionState(self.cfg) for s in states]
        kept = [p for p in live if all(p[1] is not s for s in states)]
        self._prev = kept + [(b, s, ts) for b, s in zip(boxes, states)]
        return states

    def fields(self, image, faces: list, ts: float | None) -> list[dict]:
        """The attention fields of each face (``ts`` None: a single image, no baseline and no events)."""
        from edge.attention import measure
        from edge.attention.landmarks import face_landmarks
        from edge.attention.state import single_frame

        states = self._states([f.box for f in faces], ts) if ts is not None else [None] * len(faces)
        out = []
        for face, state in zip(faces, states):
            lm = face_landmarks(self.landmarker, image, face, min_score=self.cfg.min_face_score)
            if lm is None:
                out.append({"eyes_closed": None, "eye_openness": None, "mouth_open": None,
                            "yaw": None, "pitch": None, "roll": None, "landmark_score": None})
                continue
            sig = measure(lm.points, image.shape[1::-1])
            if state is None:
                snap, events = single_frame(sig, self.cfg), None
            else:
                events = state.update(sig, ts)
                snap = state.snapshot()
            rec = {k: snap[k] for k in ("eyes_closed", "eye_openness", "mouth_open", "yaw", "pitch", "roll")}
            rec["landmark_score"] = round(lm.score, 4)
            if events is not None:
                rec["attention_events"] = events
            out.append(rec)
        return out


def analyze_file(path: Path, detector, classifier, every: int = 1, progress=None,
                 attention: AttentionFaces | None = None) -> Iterator[dict]:
    """Records for every face in ``path`` (an image or a video, every ``every``-th frame); ``attention``
    adds the landmark signals (``--attention``)."""
    labels = classifier.labels
    detector.reset()  # a new file: nothing followed from the last one
    if attention is not None:
        attention.reset()
    # Images: every pass; videos: the detector's schedule (every pass on some frames, windows around the
    # faces of the previous frame on the others).
    image_file = _is_image(path)
    detect = detector.detect if image_file else detector.detect_frame
    for frame_no, time_s, image in _frames(path, every):
        faces = detect(image)
        probs = classifier.classify_faces(faces)
        extra = [{}] * len(faces)
        if attention is not None:
            # Video frames without a time (no frame rate in the file) are numbered as 30 fps.
            ts = None if image_file else (time_s if time_s is not None else frame_no / 30.0)
            extra = attention.fields(image, faces, ts)
        for i, (face, p) in enumerate(zip(faces, probs)):
            top = top_classes(p, classifier.manifest.class_prior)
            yield {
                "path": str(path), "frame": frame_no, "time_s": time_s, "face": i,
                "box": [int(v) for v in face.box], "detector_score": round(float(face.score), 4),
                "expression": labels[top], "confidence": round(float(p[top]), 4),
                "scores": {k: round(float(v), 4) for k, v in zip(labels, p)}, **extra[i],
            }
        if progress is not None:
            progress.update(1)


def _progress(total: int):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional on the device
        return None
    return tqdm(total=total, unit="frame", desc="analyze", file=sys.stderr, disable=None)


def run(args: argparse.Namespace) -> int:
    """Run ``fer-edge analyze``; returns 0, or 1 when some files could not be read (the rest is written)."""
    from edge.classify import ExpressionClassifier, ModelConfig
    from edge.detect import DetectorConfig, create_detector

    if args.every < 1:
        raise DataError(f"--every must be 1 or more, got {args.every}")
    files = collect_inputs(args.paths)
    overrides = {k: getattr(args, k) for k in ("min_score", "min_size", "margin", "precision")
                 if getattr(args, k, None) is not None}
    try:
        det_cfg = DetectorConfig(type=args.detector, threads=args.threads, align=not args.no_align,
                                 accelerator=args.accelerator, device=args.device, **overrides)
    except ValueError as exc:  # pydantic ValidationError: a range check failed
        err = exc.errors()[0] if hasattr(exc, "errors") else {"loc": ("?",), "msg": str(exc)}
        opt = "--" + str(err["loc"][0]).replace("_", "-")
        raise DataError(f"invalid {opt} {err.get('input')!r}: {err['msg'].lower()}") from None
    detector = create_detector(det_cfg)
    classifier = ExpressionClassifier(ModelConfig(path=args.model, accelerator=args.accelerator, device=args.device,
                                                  threads=args.threads))
    attention = AttentionFaces(args.threads) if getattr(args, "attention", False) else None
    failed: list[str] = []
    try:
        out = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout
    except OSError as exc:
        raise DataError(f"cannot write --output {args.output} ({exc.strerror}): choose a writable path") from None
    progress = _progress(sum(_frame_count(f, args.every) for f in files)) if files else None
    try:
        writer = RecordWriter(out, args.format, classifier.labels, attention is not None)
        for path in files:
            try:
                for rec in analyze_file(path, detector, classifier, args.every, progress, attention):
                    writer.write(rec)
            except OSError as exc:
                failed.append(str(path))
                log.warning("skipping %s: %s", path, exc)
    finally:
        if progress is not None:
            progress.close()
        if out is not sys.stdout:
            out.close()
    log.info("analyzed %d file(s) on %s: %d face record(s)%s", len(files) - len(failed), classifier.backend,
             writer.count, f" -> {args.output}" if args.output else "")
    if failed:
        print(f"fer-edge analyze: {len(failed)} of {len(files)} file(s) could not be read: {', '.join(failed)}",
              file=sys.stderr)
        return 1
    return 0
