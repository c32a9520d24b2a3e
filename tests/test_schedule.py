"""The video schedule of the multi-pass presets (edge.schedule): the whole pyramid on some frames, a window
pass around each followed face on the others. Real rendered frames (the astronaut photo, scaled and moved);
which frames ran the pyramid is read from the detector's per-pass timings' keys, never from the clock."""

from __future__ import annotations

import numpy as np
import pytest

from bench.common import detector_options
from edge.detect import PRESETS, DetectorConfig, create_detector
from edge.schedule import SETTLE, window_patch, window_side
from tests.conftest import box_iou
from tests.test_detect_range import render

cv2 = pytest.importorskip("cv2")

PYRAMID = PRESETS["auto"].passes[0].label()  # the finest pass of auto: in timings_ms only when the pyramid ran


def moving(astronaut_bgr, n: int, face_px: int = 90, start=(200, 200), step=(3, 2)):
    """``n`` frames of one face drifting by ``step`` px per frame: [(frame, true box)]."""
    return [render(astronaut_bgr, face_px, (start[0] + i * step[0], start[1] + i * step[1])) for i in range(n)]


def run(det, frames):
    """detect_frame on each frame: [(faces, ran the pyramid)]."""
    out = []
    for frame in frames:
        faces = det.detect_frame(frame)
        out.append((faces, PYRAMID in det.timings_ms))
    return out


def test_the_pyramid_runs_every_n_frames_and_windows_follow_the_face_between(astronaut_bgr):
    det = create_detector(DetectorConfig(full_every=5))
    shots = moving(astronaut_bgr, 12)
    res = run(det, [f for f, _ in shots])
    # A new scene gets the pyramid on its first SETTLE frames, then every 5th frame counting from the last one.
    assert [full for _, full in res] == [True] * SETTLE + ([False] * 4 + [True]) * 2
    for (faces, _), (_, truth) in zip(res, shots):
        assert len(faces) == 1 and box_iou(faces[0].box, truth) > 0.5, (faces, truth)
        assert faces[0].eyes is not None and faces[0].crop.shape == (48, 48)
    assert "windows" in det.timings_ms
    assert det.schedule_stats() == {"full_every": 5, "full_share": round(4 / 12, 3)}


def test_windows_find_what_the_pyramid_finds(astronaut_bgr):
    """Between pyramid frames the faces (two, of different sizes) are the same as every pass would give."""
    a, ta = render(astronaut_bgr, 80, (150, 150))
    b, tb = render(astronaut_bgr, 160, (470, 300))
    frame = np.where(np.arange(640)[None, :, None] < 320, a, b).astype(np.uint8)
    every = create_detector(DetectorConfig(full_every=1))
    sched = create_detector(DetectorConfig(full_every=50))
    res = run(sched, [frame] * 4)
    assert [full for _, full in res] == [True] * SETTLE + [False] * (4 - SETTLE)
    want = every.detect_frame(frame)
    assert len(want) == 2 and every.schedule_stats() == {}  # full_every 1: no schedule, every pass each frame
    for faces, _ in res:
        assert len(faces) == 2
        for f in faces:
            assert max(box_iou(f.box, t) for t in (ta, tb)) > 0.4
            assert max(box_iou(f.box, w.box) for w in want) > 0.7


def test_a_scene_change_runs_the_pyramid_and_a_face_that_left_is_dropped(astronaut_bgr):
    det = create_detector(DetectorConfig(full_every=50))
    shots = moving(astronaut_bgr, 4)
    assert not run(det, [f for f, _ in shots])[-1][1]
    # Another shot: a noisy wall, the face elsewhere and larger; nothing followed over the cut.
    rng = np.random.default_rng(0)
    other, truth = render(astronaut_bgr, 150, (480, 300), background=30)
    other = np.clip(other.astype(np.int16) + rng.integers(-6, 7, other.shape), 0, 255).astype(np.uint8)
    (faces, full), = run(det, [other])
    assert full and any(box_iou(f.box, truth) > 0.4 for f in faces)
    assert all(box_iou(f.box, shots[-1][1]) == 0 for f in faces)
    # The face leaves an unchanged background: its window finds nothing, the pyramid confirms, no ghost box.
    (faces, full), = run(det, [np.full((480, 640, 3), 100, np.uint8)])
    assert faces == [] and full


def test_a_face_entering_a_still_scene_is_found_by_the_next_scheduled_pyramid(astronaut_bgr):
    det = create_detector(DetectorConfig(full_every=4))
    empty = np.full((480, 640, 3), 100, np.uint8)
    face, truth = render(astronaut_bgr, 90, (500, 120))
    # A small change (a 90 px face and her shoulders) is not a new scene: found at the latest on the 4th frame.
    res = run(det, [empty] * 3 + [face] * 5)
    found = [i for i, (faces, _) in enumerate(res) if any(box_iou(f.box, truth) > 0.4 for f in faces)]
    assert found and found[0] <= 3 + 4 and found == list(range(found[0], 8))
    assert res[found[0]][1]  # found by a pyramid; followed by windows afterwards
    assert not all(full for _, full in res[found[0] + 1:])


def test_reset_forgets_the_followed_faces(astronaut_bgr):
    det = create_detector(DetectorConfig(full_every=50))
    frames = [f for f, _ in moving(astronaut_bgr, 4)]
    assert [full for _, full in run(det, frames)][-1] is False
    det.reset()
    assert det.schedule.boxes.shape == (0, 4)
    assert run(det, frames[-1:])[0][1] is True  # a new video starts with the pyramid
    # detect() (images) stays stateless: every pass, the schedule untouched.
    before = det.schedule.frames
    det.detect(frames[0])
    assert PYRAMID in det.timings_ms and det.schedule.frames == before


def test_which_detectors_have_a_schedule(astronaut_bgr):
    assert create_detector(DetectorConfig()).schedule_stats() == {"full_every": 5, "full_share": 0.0}  # auto
    assert create_detector(DetectorConfig(type="classroom")).schedule is None  # its default: every pass, every frame
    assert create_detector(DetectorConfig(type="classroom", full_every=3)).schedule.full_every == 3
    assert create_detector(DetectorConfig(full_every=1)).schedule is None
    det = create_detector(DetectorConfig(type="driver", full_every=5))  # one pass: nothing to schedule
    assert det.schedule is None and det.schedule_stats() == {}
    assert [f.box for f in det.detect_frame(astronaut_bgr)] == [f.box for f in det.detect(astronaut_bgr)]


def test_window_geometry(astronaut_bgr):
    assert window_side(50, 480) == 100  # twice the face
    assert window_side(420, 480) == int(round(1.35 * 420))  # a large face: no more than needed, >= 1.35x
    assert window_side(300, 480) == 480
    patch, x0, y0 = window_patch(astronaut_bgr, np.array([-20.0, 10.0, 40.0, 70.0]), 120)
    assert patch.shape == (120, 120, 3) and (x0, y0) == (-50, -20)
    assert (patch[:, :50] == 0).all() and (patch[:20] == 0).all()  # outside the frame: black, as the letterbox
    assert np.array_equal(patch[20:, 50:], astronaut_bgr[0:100, 0:70])


def test_bench_detector_names():
    assert detector_options("auto") == ("auto", {})
    assert detector_options("auto+every1+noalign") == ("auto", {"full_every": 1, "align": False})
    assert detector_options("auto+int8") == ("auto", {"precision": "int8"})
    with pytest.raises(ValueError, match="unknown detector flag"):
        detector_options("auto+fast")
