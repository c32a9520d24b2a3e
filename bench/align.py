"""``fer-edge bench align``: choose the alignment deadband (``edge.crop.ALIGN_MIN_DEG``, the smallest eye-line tilt
that gets a crop rotated) on FER2013 faces pasted upright and tilted, by measurement.

Each face is pasted into a gray 640x480 frame at several sizes and tilts; the default detector (crops unaligned)
finds it; the classifier labels the plain crop and the crop rotated upright from the eyes, whatever the tilt. A
deadband d then picks, per face, the rotated crop when d <= |eye-line tilt| <= ALIGN_MAX_DEG and the plain one
otherwise, so one pass scores every candidate d; the default (``edge.crop.face_views``: both views' probabilities
averaged at 5-20 degrees, the rotated crop from 20) is scored from the same two crops. Choose on PublicTest
(``--split``); check on PrivateTest.
"""

from __future__ import annotations

import numpy as np

from convert.report import markdown_table
from edge.crop import ALIGN_FULL_DEG, ALIGN_MAX_DEG, ALIGN_MIN_DEG

DEADBANDS = (0, 3, 5, 8, 10, 12, 15, 20)
SIZES = (72, 140, 240)
ANGLES = (-20, -10, 0, 10, 20)


def align_records(data: str, split: str = "PublicTest", n: int = 300, sizes=SIZES, angles=ANGLES, seed: int = 0,
                  threads: int = 1) -> list[dict]:
    """One record per found face: true tilt, size, measured eye-line tilt, plain / rotated crop right or wrong."""
    import cv2

    from bench.common import progress
    from bench.e2e_truth import MATCH_IOU, _iou
    from bench.e2e_video import paste_face
    from convert.data import load_split
    from edge.classify import ExpressionClassifier, ModelConfig
    from edge.crop import crop_face, eye_angle
    from edge.detect import DetectorConfig, create_detector

    cv2.setNumThreads(threads)
    x, y = load_split(data, split)
    pick = np.random.default_rng(seed).choice(len(x), size=min(n, len(x)), replace=False)
    det = create_detector(DetectorConfig(threads=threads, align=False))
    clf = ExpressionClassifier(ModelConfig(accelerator="cpu", threads=threads))
    recs = []
    for side in progress(sizes, desc="align", unit="size"):
        for angle in angles:
            plain, rotated, rows = [], [], []
            for i in pick:
                frame = np.full((480, 640, 3), 110, np.uint8)
                px, py = (640 - side) // 2, (480 - side) // 2
                paste_face(frame, x[i], px, py, side, float(angle))
                faces = [f for f in det.detect(frame) if _iou(f.box, (px, py, side, side)) >= MATCH_IOU]
                if not faces or faces[0].eyes is None:
                    continue
                f = faces[0]
                plain.append(f.crop)
                rotated.append(crop_face(frame, f.box, det.cfg.margin, f.eyes, det.lift, min_deg=0.0))
                rows.append({"size": side, "angle": angle, "tilt": abs(eye_angle(f.eyes)), "label": int(y[i])})
            if rows:
                pp, pr = clf.classify_batch(plain), clf.classify_batch(rotated)
                for r, a, b in zip(rows, pp, pr):
                    recs.append({**r, "plain": bool(a.argmax() == r["label"]), "rotated": bool(b.argmax() == r["label"]),
                                 "both": bool((a + b).argmax() == r["label"])})
    return recs


def deadband(r: dict, d: float, max_deg: float = ALIGN_MAX_DEG) -> bool:
    """Right or wrong when the rotated crop is taken from a tilt of ``d`` to ``max_deg`` degrees, else the plain one."""
    return r["rotated"] if d <= r["tilt"] <= max_deg else r["plain"]


def blended(r: dict, low: float = ALIGN_MIN_DEG, full: float = ALIGN_FULL_DEG, max_deg: float = ALIGN_MAX_DEG) -> bool:
    """Right or wrong under the default (edge.crop.face_views): plain below ``low``, both views averaged up to
    ``full``, rotated up to ``max_deg``, plain beyond."""
    return r["both"] if low <= r["tilt"] < full else deadband(r, full, max_deg)


def deadband_table(recs: list[dict], deadbands=DEADBANDS, max_deg: float = ALIGN_MAX_DEG) -> dict:
    """Accuracy per |true tilt| (0, 10, 20) for no alignment, each deadband d (rotated from d on), and the default
    (both views averaged at 5-20 degrees, rotated from 20)."""
    out = {}
    for tilt in sorted({abs(r["angle"]) for r in recs}):
        rs = [r for r in recs if abs(r["angle"]) == tilt]
        row = {"faces": len(rs), "no align": float(np.mean([r["plain"] for r in rs]))}
        for d in deadbands:
            row[f"{d:g}"] = float(np.mean([deadband(r, d, max_deg) for r in rs]))
        row["default"] = float(np.mean([blended(r) for r in rs]))
        out[str(tilt)] = row
    return out


def paired(recs: list[dict], former: float = 5.0) -> dict:
    """Per |true tilt|: the default minus no alignment and minus the former default (rotated from ``former``
    degrees), in points, with the standard error of that paired difference (the same detections both ways)."""
    out = {}
    for tilt in sorted({abs(r["angle"]) for r in recs}):
        rs = [r for r in recs if abs(r["angle"]) == tilt]
        new = np.array([blended(r) for r in rs], float)
        row = {}
        for name, old in (("no align", [r["plain"] for r in rs]), (f"d = {former:g}", [deadband(r, former) for r in rs])):
            d = new - np.array(old, float)
            row[name] = [100 * float(d.mean()), 100 * float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0]
        out[str(tilt)] = row
    return out


def run_align(data: str, split: str = "PublicTest", n: int = 300, seed: int = 0, threads: int = 1) -> dict:
    recs = align_records(data, split, n, seed=seed, threads=threads)
    return {"split": split, "n": n, "sizes": list(SIZES), "angles": list(ANGLES), "seed": seed,
            "table": deadband_table(recs), "paired": paired(recs), "by_size": {str(s): deadband_table([r for r in recs if r["size"] == s])
                                                       for s in SIZES}}


def format_align(res: dict) -> str:
    cols = [k for k in next(iter(res["table"].values())) if k != "faces"]
    head = ["|true tilt|", "faces"] + [c if c in ("no align", "default") else f"d = {c}" for c in cols]

    def rows(table):
        return [[f"{t} deg", v["faces"]] + [f"{100 * v[c]:.1f}" for c in cols] for t, v in table.items()]

    out = [f"### Alignment deadband on {res['split']} ({res['n']} faces x sizes {res['sizes']} x tilts "
           f"{res['angles']}, seed {res['seed']})", "", "Accuracy (%) of the crops a deadband d chooses (rotated "
           f"when d <= |eye-line tilt| <= 45 deg) and of the default (both views averaged at {ALIGN_MIN_DEG:g}-"
           f"{ALIGN_FULL_DEG:g} deg, rotated from {ALIGN_FULL_DEG:g}), all sizes:", "", markdown_table(head, rows(res["table"]))]
    out += ["", "The default minus the other choice on the same detections, points +- one standard error of the paired "
            "difference:", ""]
    out += [f"- {t} deg: " + "; ".join(f"vs {k} {v[0]:+.2f} +- {v[1]:.2f}" for k, v in row.items())
            for t, row in res["paired"].items()]
    for s, table in res["by_size"].items():
        out += ["", f"{s} px:", "", markdown_table(head, rows(table))]
    return "\n".join(out)
