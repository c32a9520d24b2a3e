"""The landmark stage and the attention signals (edge/attention/): the real MediaPipe landmark model on a real
face, the pure functions on hand-built landmarks with known answers, the state machine on synthetic series."""

from __future__ import annotations

import numpy as np
import pytest

from edge.attention import AttentionConfig, AttentionState, FaceSignals
from edge.attention.signals import (
    FACE_3D, FACE_3D_INDICES, LEFT_EYE, MOUTH_CORNERS, MOUTH_PAIRS, PNP_FOCAL, RIGHT_EYE, camera_matrix,
    euler_from_matrix, eye_aspect_ratio, eye_openness, head_pose, matrix_from_euler, mouth_aspect_ratio, off_road,
)
from tests.conftest import ASTRONAUT_FACE

# --------------------------------------------------------------------------- the landmark model, real face


@pytest.fixture(scope="module")
def landmarker():
    from edge.attention import FaceLandmarker

    return FaceLandmarker(threads=1)


def _inside(points, box, slack=0.1):
    x, y, w, h = box
    return ((points[:, 0] >= x - slack * w) & (points[:, 0] <= x + w + slack * w)
            & (points[:, 1] >= y - slack * h) & (points[:, 1] <= y + h + slack * h))


def test_landmarks_on_a_real_face(astronaut_bgr, landmarker):
    lm = landmarker.landmarks(astronaut_bgr, ASTRONAUT_FACE)
    assert lm.points.shape == (468, 3) and lm.score > 0.9
    assert _inside(lm.points, ASTRONAUT_FACE).mean() > 0.97
    p = lm.points
    eyes_y = (p[list(RIGHT_EYE), 1].mean() + p[list(LEFT_EYE), 1].mean()) / 2
    mouth_y = p[list(MOUTH_CORNERS), 1].mean()
    assert eyes_y < p[1, 1] < mouth_y < p[152, 1]  # eyes, nose tip, mouth, chin from the top down
    assert p[list(RIGHT_EYE), 0].mean() < p[list(LEFT_EYE), 0].mean()  # subject's right eye on the image's left
    # Her eyes are open and her smile parts the lips a little.
    assert 0.18 < eye_aspect_ratio(p, RIGHT_EYE) < 0.4 and 0.18 < eye_aspect_ratio(p, LEFT_EYE) < 0.4
    assert mouth_aspect_ratio(p) < 0.4
    pitch, yaw, roll = head_pose(p, astronaut_bgr.shape[1::-1])
    assert abs(yaw) < 15 and abs(roll) < 15 and -40 < pitch < 15  # a portrait: roughly frontal, chin down a little


def test_rotated_face_is_found_and_its_roll_measured(astronaut_bgr, landmarker):
    import cv2

    x, y, w, h = ASTRONAUT_FACE
    centre = (x + w / 2, y + h / 2)
    upright = landmarker.landmarks(astronaut_bgr, ASTRONAUT_FACE)
    tilted_img = cv2.warpAffine(astronaut_bgr, cv2.getRotationMatrix2D(centre, -25, 1.0),
                                astronaut_bgr.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    # The crop rotated by the eyes (as the detector's keypoints give them), found on the tilted frame.
    tilted = landmarker.landmarks(tilted_img, ASTRONAUT_FACE, upright.eyes())
    tilted = landmarker.landmarks(tilted_img, tilted.box(), tilted.eyes())
    assert tilted.score > 0.9
    size = tilted_img.shape[1::-1]
    roll0 = head_pose(upright.points, size)[2]
    roll1 = head_pose(tilted.points, size)[2]
    assert roll1 - roll0 == pytest.approx(25, abs=5)  # rotated clockwise by 25 degrees in the image


def test_no_face_scores_low(landmarker):
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert landmarker.landmarks(noise, (100, 60, 120, 120)).score < 0.5


# --------------------------------------------------------------------------- pure functions, known answers


def _eye(points, idx, outer, inner, top, bottom):
    """Place an eye: p1 outer, p4 inner corner, p2/p3 at height top, p5/p6 at height bottom."""
    p1, p2, p3, p4, p5, p6 = idx
    points[p1], points[p4] = outer, inner
    xs = np.linspace(outer[0], inner[0], 4)[1:3]
    points[p2], points[p3] = (xs[0], top), (xs[1], top)
    points[p6], points[p5] = (xs[0], bottom), (xs[1], bottom)


def test_eye_aspect_ratio_of_a_known_polygon():
    pts = np.zeros((468, 2))
    _eye(pts, RIGHT_EYE, (0, 0), (6, 0), -1.5, 1.5)  # lid gap 3, width 6 -> (3 + 3) / (2 * 6)
    _eye(pts, LEFT_EYE, (20, 0), (14, 0), -0.3, 0.3)  # lid gap 0.6 -> 0.1
    assert eye_aspect_ratio(pts, RIGHT_EYE) == pytest.approx(0.5)
    assert eye_aspect_ratio(pts, LEFT_EYE) == pytest.approx(0.1)
    assert eye_aspect_ratio(pts * 7.0, RIGHT_EYE) == pytest.approx(0.5)  # does not depend on the size


def test_mouth_aspect_ratio_and_openness():
    pts = np.zeros((468, 2))
    pts[MOUTH_CORNERS[0]], pts[MOUTH_CORNERS[1]] = (0, 0), (10, 0)
    for (u, lo), gap in zip(MOUTH_PAIRS, (4, 6, 5)):
        pts[u], pts[lo] = (5, -gap / 2), (5, gap / 2)
    assert mouth_aspect_ratio(pts) == pytest.approx(15 / 30)
    assert eye_openness(0.28, baseline=0.28, closed=0.08) == 1.0
    assert eye_openness(0.08, baseline=0.28, closed=0.08) == 0.0
    assert eye_openness(0.12, baseline=0.28, closed=0.08) == pytest.approx(0.2)
    assert eye_openness(0.5, baseline=0.28, closed=0.08) == 1.0


@pytest.mark.parametrize("pose", [(0, 0, 0), (10, -30, 5), (-15, 40, -10), (20, 10, 25)])
def test_head_pose_recovers_a_rendered_pose(pose):
    """Project the generic 3D face with known angles, as a camera 2 m away would see it; solvePnP finds them."""
    import cv2

    size = (640, 480)
    r = matrix_from_euler(*pose)
    assert euler_from_matrix(r) == pytest.approx(pose, abs=1e-6)
    obj = FACE_3D * np.array([1.0, -1.0, -1.0])  # OpenCV axes, as head_pose uses them
    cam = camera_matrix(size, focal=PNP_FOCAL * size[0])
    rvec, _ = cv2.Rodrigues(r)
    img, _ = cv2.projectPoints(obj, rvec, np.array([0.0, 0.0, 20000.0]), cam, None)
    pts = np.zeros((468, 2))
    pts[list(FACE_3D_INDICES)] = img.reshape(-1, 2)
    assert head_pose(pts, size) == pytest.approx(pose, abs=1.0)


def test_aflw_sign_convention():
    """Yaw > 0 turns the nose to the image's left, pitch > 0 looks up, roll > 0 tilts clockwise (image y down)."""
    nose = np.array([0.0, 0.0, -1.0])  # the nose points at the camera (OpenCV axes: z away from it)
    up = np.array([0.0, -1.0, 0.0])
    right_eye_to_left = np.array([1.0, 0.0, 0.0])
    assert (matrix_from_euler(0, 30, 0) @ nose)[0] < 0
    assert (matrix_from_euler(30, 0, 0) @ nose)[1] < 0
    assert (matrix_from_euler(0, 0, 30) @ right_eye_to_left)[1] > 0 and (matrix_from_euler(0, 0, 30) @ up)[0] > 0


def test_off_road_cone():
    assert not off_road(10, -5, 30, 20)
    assert off_road(35, 0, 30, 20) and off_road(0, -25, 30, 20)
    assert not off_road(35, 0, 30, 20, yaw_center=20)  # a camera off to the side
    assert off_road(float("nan"), 0, 30, 20)


# --------------------------------------------------------------------------- the state machine


OPEN, CLOSED = 0.30, 0.08


def _run(state, series, fps=30.0, t0=0.0, mar=0.0, yaw=0.0):
    """Feed (duration_s, ear) segments at ``fps``; returns all events and the last timestamp."""
    events, t = [], t0
    for duration, ear in series:
        for _ in range(int(round(duration * fps))):
            events += state.update(FaceSignals(ear, ear, mar, 0.0, yaw, 0.0), t)
            t += 1.0 / fps
    return events, t


def test_short_closure_is_a_blink_long_one_is_a_long_closure():
    state = AttentionState()
    events, _ = _run(state, [(3.0, OPEN), (0.2, CLOSED), (2.0, OPEN), (1.2, CLOSED), (1.0, OPEN)])
    assert [e["type"] for e in events] == ["blink", "long_closure"]
    blink, long = events
    assert blink["start"] == pytest.approx(3.0, abs=0.05) and blink["duration"] == pytest.approx(0.2, abs=0.05)
    assert long["start"] == pytest.approx(5.2, abs=0.05) and long["duration"] == pytest.approx(1.0, abs=0.05)
    snap = state.snapshot()
    assert snap["eye_openness"] == [1.0, 1.0] and not snap["eyes_closed"]
    assert snap["baseline_ear"] == [pytest.approx(OPEN), pytest.approx(OPEN)]
    assert snap["long_closures_per_min"] == 1 and not snap["drowsy"]


def test_baseline_is_per_face():
    """Narrow eyes (EAR 0.2 open) blink too: their open EAR becomes the baseline, so 0.2 is fully open."""
    state = AttentionState()
    events, _ = _run(state, [(2.0, 0.2), (0.15, CLOSED), (1.0, 0.2)])
    assert [e["type"] for e in events] == ["blink"]
    assert state.snapshot()["eye_openness"] == [1.0, 1.0]


def test_perclos_of_a_known_series():
    # 60 s at 10 fps: 6 closures of 1.5 s (9 s closed, 15 %), each a long closure.
    state = AttentionState()
    series = [(1.0, OPEN)] + [(8.5, OPEN), (1.5, CLOSED)] * 6
    events, _ = _run(state, series, fps=10.0)
    snap = state.snapshot()
    assert snap["perclos"] == pytest.approx(9.0 / 61.0, abs=0.01)
    assert sum(e["type"] == "long_closure" for e in events) == 6
    assert snap["drowsy"]  # >= 2 long closures in the last minute (and PERCLOS near 0.15)
    # A further minute with open eyes: the window forgets them.
    _run(state, [(61.0, OPEN)], fps=10.0, t0=snap["ts"] + 0.1)
    assert state.snapshot()["perclos"] == 0.0 and not state.snapshot()["drowsy"]


def test_yawn_needs_one_and_a_half_seconds():
    state = AttentionState()
    events, t = _run(state, [(2.0, OPEN)], mar=0.1)
    ev, t = _run(state, [(1.0, OPEN)], t0=t, mar=0.7)  # talking or a short gape: no yawn
    events += ev
    ev, t = _run(state, [(1.0, OPEN)], t0=t, mar=0.1)
    events += ev
    ev, t = _run(state, [(2.5, OPEN)], t0=t, mar=0.7)
    events += ev
    assert [e["type"] for e in events] == ["yawn"]
    assert events[0]["duration"] == pytest.approx(1.5, abs=0.05) and state.snapshot()["mouth_open"] == 0.7
    assert state.snapshot()["yawns"] == 1 and not state.snapshot()["yawning"]


def test_eyes_off_road_for_three_and_a_half_seconds_is_distracted():
    state = AttentionState(AttentionConfig(yaw_limit=30))
    events, t = _run(state, [(2.0, OPEN)], yaw=5.0)
    ev, t = _run(state, [(3.0, OPEN)], t0=t, yaw=45.0)  # a mirror check: not yet
    events += ev
    assert events == [] and state.snapshot()["off_road_s"] == pytest.approx(2.97, abs=0.05)
    _run(state, [(0.5, OPEN)], t0=t, yaw=5.0)
    ev, t = _run(state, [(4.0, OPEN)], t0=t + 0.5, yaw=-50.0)
    assert [e["type"] for e in ev] == ["off_road"] and ev[0]["duration"] == pytest.approx(3.5, abs=0.05)
    assert state.snapshot()["distracted"]


def test_config_refuses_unknown_keys():
    with pytest.raises(ValueError, match="extra"):
        AttentionConfig(perclos_treshold=0.2)


# --------------------------------------------------------------------------- analyze --attention, bench tables


def _close_eyes(image, points):
    """The astronaut with her eyes shut: the band between the lids of each eye is cut out (a vertical remap
    around the eye), so the lids meet. Real pixels, moved."""
    import cv2

    h, w = image.shape[:2]
    mx, my = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    sy = my.copy()
    for eye in (RIGHT_EYE, LEFT_EYE):
        p = points[list(eye), :2]
        gap = (p[[4, 5], 1].mean() - p[[1, 2], 1].mean()) / 2 + 1
        reach, cy = 2.5 * gap + 4, p[:, 1].mean()
        pad = 0.25 * (p[:, 0].max() - p[:, 0].min())
        sel = (mx >= p[:, 0].min() - pad) & (mx <= p[:, 0].max() + pad) & (np.abs(my - cy) <= reach)
        d = my - cy
        sy[sel] = (cy + np.sign(d) * (gap + np.abs(d) * (reach - gap) / reach))[sel]
    return cv2.remap(image, mx, sy, cv2.INTER_LINEAR)


@pytest.fixture(scope="module")
def blink_video(tmp_path_factory, astronaut_bgr, landmarker):
    """A 15 fps video of the astronaut: 2 s open, a 0.2 s blink, 1.5 s open, eyes shut 1.2 s, 1 s open."""
    import cv2

    pts = landmarker.landmarks(astronaut_bgr, ASTRONAUT_FACE).points
    shut = _close_eyes(astronaut_bgr, pts)
    path = tmp_path_factory.mktemp("attention") / "blink.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (512, 512))
    for n, frame in [(30, astronaut_bgr), (3, shut), (22, astronaut_bgr), (18, shut), (15, astronaut_bgr)]:
        for _ in range(n):
            writer.write(frame)
    writer.release()
    return path, shut


def test_closed_eyes_read_closed(astronaut_bgr, blink_video, landmarker):
    from edge.attention import measure
    from edge.attention.state import single_frame

    _, shut = blink_video
    size = astronaut_bgr.shape[1::-1]
    open_ = single_frame(measure(landmarker.landmarks(astronaut_bgr, ASTRONAUT_FACE).points, size))
    closed = single_frame(measure(landmarker.landmarks(shut, ASTRONAUT_FACE).points, size))
    assert not open_["eyes_closed"] and min(open_["eye_openness"]) > 0.6
    assert closed["eyes_closed"] and max(closed["eye_openness"]) < 0.5


def test_analyze_attention_through_the_cli(media_dir, blink_video, standin_model):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    video, _ = blink_video
    proc = subprocess.run([sys.executable, "-m", "fer_edge", "analyze", str(media_dir / "astronaut.png"), str(video),
                           "--attention", "--model", str(standin_model), "--accelerator", "cpu"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    recs = [json.loads(line) for line in proc.stdout.splitlines()]
    image = [r for r in recs if r["path"].endswith(".png")]
    assert len(image) == 1 and image[0]["eyes_closed"] is False and "attention_events" not in image[0]
    assert abs(image[0]["yaw"]) < 15 and 0 <= image[0]["mouth_open"] <= 1
    frames = [r for r in recs if r["path"].endswith(".avi")]
    assert len(frames) == 88  # every frame: one face
    # The eye events (the generic 3D face reads her pose as ~24 degrees down, outside the default road cone, so
    # an off_road event comes too: docs/attention.md).
    events = [e for r in frames for e in r["attention_events"] if e["type"] != "off_road"]
    assert [e["type"] for e in events] == ["blink", "long_closure"]
    assert events[0]["start"] == pytest.approx(2.0, abs=0.1) and events[0]["duration"] == pytest.approx(0.2, abs=0.1)
    assert events[1]["start"] == pytest.approx(3.7, abs=0.1)
    assert sum(r["eyes_closed"] for r in frames) == pytest.approx(21, abs=3)


def test_analyze_attention_csv_columns(media_dir, standin_model, tmp_path):
    import argparse
    import csv

    from edge import analyze

    parser = argparse.ArgumentParser()
    analyze.add_arguments(parser)
    out = tmp_path / "out.csv"
    args = parser.parse_args([str(media_dir / "astronaut.png"), "--attention", "--format", "csv", "--model",
                              str(standin_model), "--accelerator", "cpu", "--output", str(out)])
    assert analyze.run(args) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert row["eyes_closed"] == "False" and 0.6 < float(row["eye_openness_left"]) <= 1
    assert abs(float(row["yaw"])) < 15 and row["attention_events"] == "[]"


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory, astronaut_bgr):
    import cv2

    d = tmp_path_factory.mktemp("media")
    cv2.imwrite(str(d / "astronaut.png"), astronaut_bgr)
    return d


def test_bench_attention_scores_and_table():
    from bench.attention_score import format_attention, match_blinks, score_attention

    # Two labelled blinks; found: one overlapping the first, one a frame after the second ends, one false.
    assert match_blinks([(1.0, 1.2), (3.0, 3.1)], [(1.05, 1.25), (3.12, 3.3), (5.0, 5.2)]) == (2, 1)
    assert match_blinks([(1.0, 1.2)], []) == (0, 0)
    open_, shut = (0.30, 0.30, 0.0), (0.08, 0.08, 0.0)
    frames = [(i / 30, (*(shut if 30 <= i < 36 else open_), 0.0, 0.0, 0.0)) for i in range(90)]
    raw = {
        "stills": [{"subject": "000001", "label": "open", "ear_left": 0.3, "ear_right": 0.3, "mar": 0.0},
                   {"subject": "000007", "label": "closed", "ear_left": 0.08, "ear_right": 0.09, "mar": 0.0},
                   {"subject": "000007", "label": "open", "missed": True}],
        "clips": [{"clip": "000006M_FNN", "subject": "000006", "blinks": [(1.0, 1.2), (2.5, 2.6)], "seconds": 3.0,
                   "frames": frames}],
        "poses": [{"image": "a.jpg", "truth": {"pitch": 0, "yaw": 10, "roll": 0}, "pred": {"pitch": 4, "yaw": 16, "roll": 1}},
                  {"image": "b.jpg", "truth": {"pitch": 0, "yaw": 70, "roll": 0}, "pred": None}],
        "speed": {"threads": 1, "landmarks_ms": 2.5, "signals_ms": 0.2},
    }
    res = score_attention(raw)
    assert res["eye_state"]["tuning"]["accuracy"] == 1.0 and res["eye_state"]["held-back"]["accuracy"] == 0.5
    assert res["blinks"]["held-back"]["recall"] == 0.5 and res["blinks"]["held-back"]["false"] == 0
    assert res["head_pose"] == {"n": 1, "no_face": 0, "pitch_mae": 4.0, "yaw_mae": 6.0, "roll_mae": 1.0}
    table = format_attention(res)
    assert "| blink recall, ZJU clips (held-back, 1/2 blinks, 1 clips) | 50.0% | >= 90% | NOT met |" in table
    assert "| head pose MAE yaw, AFLW2000-3D" in table and "6.0 deg | <= 8 deg | met |" in table
    assert "50.0% | >= 95% | NOT met" in table and "2.50 ms" in table


def test_bench_attention_refuses_a_missing_data_folder(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    for extra in ([], ["--data", str(tmp_path)]):
        proc = subprocess.run([sys.executable, "-m", "fer_edge", "bench", "attention", "--out", str(tmp_path / "o"),
                               *extra], cwd=root, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert ("--data" in proc.stderr) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
