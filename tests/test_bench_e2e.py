"""`fer-edge bench e2e`: scoring against ground truth, and the frames it draws (no dataset needed)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.e2e_truth import crop_region, score
from bench.e2e_video import paste_face


def face(i, box, label, size=100, angle=0.0):
    return {"id": i, "box": list(box), "label": label, "size": size, "angle": angle}


def test_score_recall_majority_label_and_false_positives():
    truth = [
        [face(0, (10, 10, 100, 100), 3), face(1, (300, 200, 100, 100), 4)],
        [face(0, (12, 10, 100, 100), 3), face(1, (300, 202, 100, 100), 4)],
        [face(0, (14, 10, 100, 100), 3), face(1, (300, 204, 100, 100), 4)],
        [],  # face-free
        [],
    ]
    frames = [
        [[10, 12, 98, 100, 3], [500, 10, 60, 60, 0]],  # face 0 right; an extra box (not counted as an empty-frame FP)
        [[12, 10, 100, 100, 5], [301, 200, 100, 100, 4]],  # face 0 wrong once, face 1 right
        [[14, 10, 100, 100, 3]],  # face 1 missed
        [[0, 0, 50, 50, 6]],  # one false positive on an empty frame
        [],
    ]
    res = score(truth, frames, [100])
    band = res["bands"][100]
    assert band["faces"] == 2
    assert band["recall"] == pytest.approx(4 / 6)  # face-frames found
    assert res["faces"][0]["pred"] == 3 and res["faces"][1]["pred"] == 4  # majority over the frames found
    assert band["accuracy"] == 1.0
    assert res["fp_per_empty_frame"] == pytest.approx(0.5) and res["empty_frames"] == 2


def test_a_box_matches_one_face_only():
    truth = [[face(0, (100, 100, 80, 80), 1), face(1, (104, 100, 80, 80), 2)]]
    res = score(truth, [[[102, 100, 80, 80, 1]]], [100])
    assert res["bands"][100]["recall"] == pytest.approx(0.5)


def test_recall_of_the_region_classified():
    # FER2013 crops frame the face loosely: the detector's box (the inner face, 60% of the crop, a little low)
    # misses at IoU 0.4, the square the pipeline classifies (the box + 0.1 a side) matches, and votes.
    truth = [[face(0, (100, 100, 100, 100), 3)]]
    inner = [[[120, 125, 60, 60, 3]]]
    assert crop_region(inner[0][0], 0.1) == pytest.approx((114, 119, 72, 72))
    res = score(truth, inner, [100], margin=0.1)
    assert res["bands"][100]["recall"] == 0 and res["bands"][100]["recall_crop"] == 1.0
    assert res["faces"][0]["pred"] == 3
    assert score(truth, inner, [100])["bands"][100]["recall_crop"] == 0  # margin 0: the box squared, too small


def test_paste_face_upright_and_tilted():
    face48 = np.tile(np.arange(48, dtype=np.uint8) * 5, (48, 1))
    frame = np.zeros((480, 640, 3), np.uint8)
    paste_face(frame, face48, 100, 50, 96, 0.0)
    assert (frame[50:146, 100:196, 0] == frame[50:146, 100:196, 2]).all()
    assert frame[:50].max() == 0 and frame[146:].max() == 0  # nothing outside the square
    tilted = np.zeros((480, 640, 3), np.uint8)
    paste_face(tilted, face48, 300, 200, 96, 20.0)
    ys, xs = np.nonzero(tilted[..., 0])
    assert xs.min() < 300 and xs.max() > 300 + 96 - 1  # a rotated square reaches past the upright one


def test_yunet_pipeline_without_its_model_is_a_clear_error(tmp_path):
    from bench.e2e_report import _ours
    from edge.errors import DataError

    with pytest.raises(DataError, match="--yunet"):
        _ours(tmp_path / "v.mp4", 1, "yunet@0.7")


def test_yunet_on_a_file_that_is_no_model_names_the_file(tmp_path):
    pytest.importorskip("cv2")
    from bench.yunet import create_yunet
    from edge.errors import ModelError

    bad = tmp_path / "yunet.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(ModelError, match="yunet.onnx cannot be loaded"):
        create_yunet(str(bad))


def test_bench_classroom_scores_real_detectors_on_small_faces(tmp_path, astronaut_bgr):
    """`bench classroom` on frames of a real face (the astronaut's, as a FER2013-style 48x48 crop in a tiny CSV)."""
    import cv2

    from bench.classroom import BANDS, FACES, format_classroom, run_classroom
    from tests.conftest import ASTRONAUT_FACE

    x, y, w, h = ASTRONAUT_FACE
    side = max(w, h)
    face = cv2.resize(cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)[y - 10:y - 10 + side, x - 5:x - 5 + side], (48, 48))
    csv = tmp_path / "fer.csv"
    csv.write_text("emotion,pixels,Usage\n" + f"3,{' '.join(map(str, face.ravel()))},PrivateTest\n")
    res = run_classroom(csv, None, n=2, seed=0)
    assert set(res["rows"]) == {"auto", "auto int8", "classroom", "classroom int8"}
    auto = res["rows"]["auto"]
    assert list(auto["recall"]) == [f"{lo}-{hi - 1}" for lo, hi in BANDS] and auto["ms"] > 0
    assert auto["recall"]["52-64"] >= 0.5  # the biggest of these faces are well within auto's range
    assert res["faces_per_frame"] == FACES and "| auto int8 |" in format_classroom(res)


def test_alignment_deadband_picks_the_rotated_crop_only_above_the_deadband():
    from bench.align import deadband_table, paired

    recs = [{"angle": 0, "tilt": 2.0, "plain": True, "rotated": False, "both": False},  # noise: rotating hurts
            {"angle": 0, "tilt": 6.0, "plain": False, "rotated": True, "both": False},  # the default averages
            {"angle": 20, "tilt": 19.0, "plain": False, "rotated": True, "both": False},
            {"angle": 20, "tilt": 21.0, "plain": True, "rotated": False, "both": True},  # from 20 deg: rotated only
            {"angle": -20, "tilt": 50.0, "plain": True, "rotated": False, "both": False}]  # beyond 45 deg: never
    t = deadband_table(recs, deadbands=(0, 5, 10))
    assert t["0"] == {"faces": 2, "no align": 0.5, "0": 0.5, "5": 1.0, "10": 0.5, "default": 0.5}
    assert t["20"] == {"faces": 3, "no align": 2 / 3, "0": 2 / 3, "5": 2 / 3, "10": 2 / 3, "default": 1 / 3}
    p = paired(recs)
    assert p["0"]["no align"][0] == 0.0 and p["0"]["d = 5"][0] == -50.0  # the 6 deg face: both views, wrong
    assert np.isclose(p["20"]["d = 5"][0], -100 / 3) and np.isclose(p["20"]["no align"][0], -100 / 3)


def test_crop_deadband_is_a_parameter(astronaut_bgr):
    from edge.crop import crop_face

    eyes = ((200.0, 120.0), (260.0, 126.0))  # a 5.7 degree tilt
    plain = crop_face(astronaut_bgr, (170, 60, 115, 125), 0.1)
    assert np.array_equal(crop_face(astronaut_bgr, (170, 60, 115, 125), 0.1, eyes, min_deg=8.0), plain)
    assert not np.array_equal(crop_face(astronaut_bgr, (170, 60, 115, 125), 0.1, eyes, min_deg=5.0), plain)


def test_face_views_add_the_upright_crop_only_between_5_and_20_degrees(astronaut_bgr):
    from edge.crop import crop_face, face_views

    box = (170, 60, 115, 125)
    plain = crop_face(astronaut_bgr, box, 0.1)

    def eyes(deg):  # an eye line 60 px long through (230, 123), tilted by deg
        dx, dy = 30 * np.cos(np.radians(deg)), 30 * np.sin(np.radians(deg))
        return (230 - dx, 123 - dy), (230 + dx, 123 + dy)

    crop, upright = face_views(astronaut_bgr, box, 0.1, eyes(3))
    assert np.array_equal(crop, plain) and upright is None
    crop, upright = face_views(astronaut_bgr, box, 0.1, eyes(12))
    assert np.array_equal(crop, plain) and np.array_equal(upright, crop_face(astronaut_bgr, box, 0.1, eyes(12)))
    crop, upright = face_views(astronaut_bgr, box, 0.1, eyes(-25))
    assert not np.array_equal(crop, plain) and upright is None  # tilted well beyond FER2013's own faces: rotated
    assert np.array_equal(crop, crop_face(astronaut_bgr, box, 0.1, eyes(-25)))
    crop, upright = face_views(astronaut_bgr, box, 0.1, None)
    assert np.array_equal(crop, plain) and upright is None


def test_classify_faces_averages_the_two_views(astronaut_bgr):
    from edge.classify import ExpressionClassifier, ModelConfig
    from edge.crop import crop_face
    from edge.detect import Face

    clf = ExpressionClassifier(ModelConfig(accelerator="cpu"))
    plain = crop_face(astronaut_bgr, (170, 60, 115, 125), 0.1)
    rotated = np.ascontiguousarray(np.rot90(plain))  # a view the model labels differently enough to see the mean
    one = Face((170, 60, 115, 125), 0.9, plain)
    two = Face((170, 60, 115, 125), 0.9, plain, upright=rotated)
    p = clf.classify_faces([one, two])
    assert np.allclose(p[0], clf.classify(plain))
    assert np.allclose(p[1], (clf.classify(plain) + clf.classify(rotated)) / 2)
    assert not np.allclose(p[0], p[1]) and np.isclose(p[1].sum(), 1.0, atol=1e-5)


def test_align_records_measure_the_tilt_of_a_real_face(tmp_path, astronaut_bgr):
    import cv2

    from bench.align import align_records
    from tests.conftest import ASTRONAUT_FACE

    x, y, w, h = ASTRONAUT_FACE
    face = cv2.resize(cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)[y - 10:y + 115, x - 5:x + 120], (48, 48))
    csv = tmp_path / "fer.csv"
    csv.write_text("emotion,pixels,Usage\n" + f"3,{' '.join(map(str, face.ravel()))},PublicTest\n")
    recs = align_records(str(csv), "PublicTest", n=1, sizes=(200,), angles=(0, 20))
    assert [r["angle"] for r in recs] == [0, 20]
    assert recs[0]["tilt"] < 8 and 12 < recs[1]["tilt"] < 28  # the eye line follows the pasted tilt
