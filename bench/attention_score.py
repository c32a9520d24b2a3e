"""Scores and tables of ``fer-edge bench attention`` from the measured signals (``bench.attention``).

Everything here is plain Python over the raw measurements, so the tables are checked on tiny fixtures.
Eye state uses ``edge.attention.state.single_frame`` (what ``analyze --attention`` reports for an image);
blinks replay each clip's signals through ``AttentionState`` (what the device does per frame).
"""

from __future__ import annotations

import numpy as np

from convert.report import markdown_table

TUNING = {f"{i:06d}" for i in range(1, 6)}  # ZJU subjects 000001-000005 tune; 000006-000010 are held back
BARS = {"eye_accuracy": 0.95, "yaw_mae": 8.0, "pitch_mae": 12.0, "blink_recall": 0.90, "false_per_min": 1.0}


def group_of(subject: str) -> str:
    return "tuning" if subject in TUNING else "held-back"


def score_stills(rows: list[dict], cfg=None) -> dict:
    """Open/closed accuracy per group (``tuning``, ``held-back``); a still with no face counts as wrong."""
    from edge.attention import FaceSignals
    from edge.attention.state import single_frame

    out: dict = {}
    for g in ("tuning", "held-back"):
        mine = [r for r in rows if group_of(r["subject"]) == g]
        right = missed = 0
        for r in mine:
            if r.get("missed"):
                missed += 1
                continue
            s = single_frame(FaceSignals(r["ear_left"], r["ear_right"], r["mar"]), cfg)
            right += s["eyes_closed"] == (r["label"] == "closed")
        out[g] = {"n": len(mine), "accuracy": right / len(mine) if mine else None, "no_face": missed}
    return out


def replay_clip(frames: list, cfg=None) -> list[tuple[float, float]]:
    """(start, end) of the closures (blinks and long closures) that ``AttentionState`` finds in one clip's
    frames [(ts, (ear_left, ear_right, mar, pitch, yaw, roll) or None)]. Frames without a face are skipped."""
    from edge.attention import AttentionState, FaceSignals

    state = AttentionState(cfg)
    found = []
    for ts, s in frames:
        if s is None:
            continue
        for e in state.update(FaceSignals(*s), ts):
            if e["type"] in ("blink", "long_closure"):
                found.append((e["start"], e["start"] + e["duration"]))
    return found


def match_blinks(truth: list[tuple[float, float]], found: list[tuple[float, float]], slack: float = 1 / 30) -> tuple[int, int]:
    """(labelled blinks found, found closures that match no labelled blink); a match overlaps in time, with
    ``slack`` seconds (one frame) either side. Each found closure matches at most one labelled blink."""
    used: set[int] = set()
    hits = 0
    for t0, t1 in truth:
        for i, (f0, f1) in enumerate(found):
            if i not in used and f0 <= t1 + slack and f1 >= t0 - slack:
                used.add(i)
                hits += 1
                break
    return hits, len(found) - len(used)


def score_clips(clips: list[dict], cfg=None) -> dict:
    """Blink recall and false blinks per minute per group."""
    out: dict = {}
    for g in ("tuning", "held-back"):
        mine = [c for c in clips if group_of(c["subject"]) == g]
        truth = hits = false = 0
        seconds = 0.0
        for c in mine:
            h, f = match_blinks(c["blinks"], replay_clip(c["frames"], cfg))
            truth, hits, false, seconds = truth + len(c["blinks"]), hits + h, false + f, seconds + c["seconds"]
        out[g] = {"clips": len(mine), "blinks": truth, "found": hits, "false": false, "minutes": seconds / 60.0,
                  "recall": hits / truth if truth else None,
                  "false_per_min": false / (seconds / 60.0) if seconds else None}
    return out


def score_poses(rows: list[dict], max_yaw: float = 60.0) -> dict:
    """Mean absolute error per angle over the images with ``|yaw| <= max_yaw`` (a missed face is left out and
    counted)."""
    used = [r for r in rows if abs(r["truth"]["yaw"]) <= max_yaw]
    found = [r for r in used if r["pred"] is not None]
    mae = {k: float(np.mean([abs(r["pred"][k] - r["truth"][k]) for r in found])) if found else None
           for k in ("pitch", "yaw", "roll")}
    return {"n": len(used), "no_face": len(used) - len(found), **{f"{k}_mae": v for k, v in mae.items()}}


def score_attention(raw: dict, cfg=None) -> dict:
    """All scores of a run from its raw measurements (``bench.attention.run_attention``'s ``raw``)."""
    return {"eye_state": score_stills(raw["stills"], cfg), "blinks": score_clips(raw["clips"], cfg),
            "head_pose": score_poses(raw["poses"]), "speed": raw["speed"]}


def _pct(v) -> str:
    return "n/a" if v is None else f"{v * 100:.1f}%"


def _num(v, fmt="{:.1f}") -> str:
    return "n/a" if v is None else fmt.format(v)


def _met(ok) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def format_attention(res: dict) -> str:
    """The Markdown tables: eye state, blinks, head pose (with the bars, met or not) and the cost per face."""
    eye, bl, hp, sp = res["eye_state"], res["blinks"], res["head_pose"], res["speed"]
    rows = []
    for g in ("tuning", "held-back"):
        acc = eye[g]["accuracy"]
        rows.append([f"eye open/closed accuracy, ZJU stills ({g}, n={eye[g]['n']}, no face {eye[g]['no_face']})",
                     _pct(acc), ">= 95%", _met(None if acc is None or g == "tuning" else acc >= BARS["eye_accuracy"])])
    for g in ("tuning", "held-back"):
        b = bl[g]
        rows.append([f"blink recall, ZJU clips ({g}, {b['found']}/{b['blinks']} blinks, {b['clips']} clips)",
                     _pct(b["recall"]), ">= 90%",
                     _met(None if b["recall"] is None or g == "tuning" else b["recall"] >= BARS["blink_recall"])])
        rows.append([f"false blinks per minute ({g}, {b['false']} in {b['minutes']:.2f} min)",
                     _num(b["false_per_min"], "{:.2f}"), "<= 1",
                     _met(None if b["false_per_min"] is None or g == "tuning"
                          else b["false_per_min"] <= BARS["false_per_min"])])
    for k, bar in (("yaw", BARS["yaw_mae"]), ("pitch", BARS["pitch_mae"]), ("roll", None)):
        v = hp[f"{k}_mae"]
        rows.append([f"head pose MAE {k}, AFLW2000-3D |yaw| <= 60 (n={hp['n']}, no face {hp['no_face']})",
                     _num(v) + " deg", "n/a" if bar is None else f"<= {bar:g} deg",
                     _met(None if v is None or bar is None else v <= bar)])
    rows.append([f"landmarks per face (face model + 2 iris runs), {sp['threads']} thread(s), this machine",
                 _num(sp["landmarks_ms"], "{:.2f}") + " ms", "", ""])
    rows.append(["signals per face (EAR, MAR, solvePnP)", _num(sp["signals_ms"], "{:.3f}") + " ms", "", ""])
    pi = sp.get("pi_estimate")
    if pi:
        rows.append([f"ESTIMATE Pi 4, 1 thread, per face (face model + 2 iris runs, {pi['macs'] / 1e6:.0f} M MACs)",
                     f"{pi['pi4_1t'][0]:.0f}-{pi['pi4_1t'][1]:.0f} ms", "", ""])
        rows.append(["ESTIMATE Pi 5, 1 thread, per face", f"{pi['pi5_1t'][0]:.0f}-{pi['pi5_1t'][1]:.0f} ms", "", ""])
    text = markdown_table(["measure", "value", "bar", "bar met"], rows, ["l", "r", "r", "l"])
    note = "Tuning subjects: ZJU 000001-000005; held back: 000006-000010 (the bars are on held-back people)."
    if res.get("machine"):
        note += f" Machine: {res['machine']}."
    return text + "\n\n" + note
