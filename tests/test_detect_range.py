"""The multi-scale detection stage: small, medium and large faces in rendered 640x480 frames (a real
photograph, scaled and placed), the merge of several passes, and aligned crops."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.blazeface import BlazeFaceModel
from edge.detect import (
    BLAZEFACE_SPECS,
    DETECTOR_TYPES,
    PRESETS,
    SURE,
    VERIFY_PX,
    DetectorConfig,
    Pass,
    create_detector,
    crop_face,
    eye_angle,
    merge_detections,
    ssd_anchor_centers,
    suppress_contained,
)
from tests.conftest import ASTRONAUT_FACE, box_iou

cv2 = pytest.importorskip("cv2")


def render(astronaut_bgr, face_px: int, centre=(320, 240), background=100):
    """A 640x480 frame holding the astronaut scaled so that her face is ``face_px`` wide, its centre at
    ``centre``. Returns (frame, true face box x, y, w, h)."""
    fx, fy, fw, fh = ASTRONAUT_FACE
    k = face_px / fw
    big = cv2.resize(astronaut_bgr, None, fx=k, fy=k, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
    ox = int(round(centre[0] - (fx + fw / 2) * k))  # where the scaled image's corner lands in the frame
    oy = int(round(centre[1] - (fy + fh / 2) * k))
    frame = np.full((480, 640, 3), background, np.uint8)
    x0, y0, x1, y1 = max(0, ox), max(0, oy), min(640, ox + big.shape[1]), min(480, oy + big.shape[0])
    frame[y0:y1, x0:x1] = big[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return frame, (int(round(ox + fx * k)), int(round(oy + fy * k)), int(round(fw * k)), int(round(fh * k)))


@pytest.fixture(scope="module")
def auto():
    return create_detector(DetectorConfig())


@pytest.mark.parametrize("face_px, centre", [(44, (200, 300)), (56, (420, 120)), (80, (150, 120)), (80, (500, 380)),
                                             (160, (320, 240)), (380, (320, 250))],
                         ids=["tiny-second-look", "smaller", "small-top-left", "small-bottom-right", "medium", "large"])
def test_default_finds_small_medium_and_large_faces(astronaut_bgr, auto, face_px, centre):
    frame, truth = render(astronaut_bgr, face_px, centre)
    faces = auto.detect(frame)
    assert len(faces) == 1, [f.box for f in faces]
    assert box_iou(faces[0].box, truth) > 0.4, (faces[0].box, truth)
    assert faces[0].eyes is not None


def test_presets_by_use(astronaut_bgr):
    small, small_truth = render(astronaut_bgr, 80, (200, 200))
    large, large_truth = render(astronaut_bgr, 380, (320, 250))
    classroom = create_detector(DetectorConfig(type="classroom")).detect(small)
    assert any(box_iou(f.box, small_truth) > 0.4 for f in classroom)
    driver = create_detector(DetectorConfig(type="driver"))
    assert any(box_iou(f.box, large_truth) > 0.4 for f in driver.detect(large))
    assert driver.detect(small) == []  # the one-model preset does not look for small faces
    assert set(PRESETS) == {"auto", "classroom", "driver"}


def test_several_faces_in_one_frame(astronaut_bgr, auto):
    a, ta = render(astronaut_bgr, 90, (130, 130))
    b, tb = render(astronaut_bgr, 90, (500, 330))
    frame = np.where(np.arange(640)[None, :, None] < 320, a, b).astype(np.uint8)
    faces = auto.detect(frame)
    assert len(faces) == 2
    assert {max(range(2), key=lambda i: box_iou(f.box, (ta, tb)[i])) for f in faces} == {0, 1}


def test_no_face_in_a_blank_or_noisy_frame(auto):
    rng = np.random.default_rng(0)
    assert auto.detect(np.full((480, 640, 3), 128, np.uint8)) == []
    assert auto.detect(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) == []


def test_timings_and_description(auto, astronaut_bgr):
    auto.detect(render(astronaut_bgr, 120)[0])
    assert set(auto.timings_ms) == {p.label() for p in PRESETS["auto"].passes} | {"verify", "merge+crop"}
    assert all(v >= 0 for v in auto.timings_ms.values())
    assert auto.describe().startswith("auto (short@")


# --------------------------------------------------------------------------- second look


def test_second_look_keeps_a_small_face_and_drops_texture_misfires(astronaut_bgr, auto):
    from skimage import data

    # A face whose box is under VERIFY_PX is uncertain whatever its score: its window confirms it.
    frame, truth = render(astronaut_bgr, 44, (200, 300))
    b, s, _, tags = auto._pyramid(frame, {})
    assert (tags >= SURE).any() and max(b[:, 2] - b[:, 0]) < VERIFY_PX
    faces = auto.detect(frame)
    assert len(faces) == 1 and box_iou(faces[0].box, truth) > 0.4 and auto.timings_ms["verify"] > 0
    # Galaxies of the Hubble deep field (a background of the bench video) score 0.52-0.68 in the pyramid's passes;
    # none is found again in its window.
    sky = cv2.resize(cv2.cvtColor(data.hubble_deep_field(), cv2.COLOR_RGB2BGR), (640, 480), interpolation=cv2.INTER_AREA)
    b, s, _, tags = auto._pyramid(sky, {})
    assert len(b) >= 3 and not (tags >= SURE).any() and s.max() >= 0.6
    assert auto.detect(sky) == []


# --------------------------------------------------------------------------- scaled passes


def test_resized_short_range_model_has_matching_anchors():
    spec = BLAZEFACE_SPECS["blazeface_short"]
    shape = Pass("blazeface_short", 0.57).shape(640, 480)
    assert shape == (272, 368) and all(v % 16 == 0 for v in shape)
    # 2 anchors per cell at stride 8, 6 at stride 16 (MediaPipe's layer layout), on a 368x272 input
    assert len(ssd_anchor_centers(spec, shape)) == 46 * 34 * 2 + 23 * 17 * 6
    model = BlazeFaceModel("blazeface_short", shape=shape)  # checks the count against the model's output
    assert len(model.anchors) == 46 * 34 * 2 + 23 * 17 * 6


def test_detector_types_listed_once_for_analyze():
    from edge.analyze import DETECTOR_CHOICES

    assert DETECTOR_CHOICES == DETECTOR_TYPES


# --------------------------------------------------------------------------- merging passes


def test_merge_joins_one_face_seen_by_two_passes_and_keeps_other_faces():
    boxes = np.array([[100, 100, 200, 200],    # pass 1
                      [104, 98, 206, 204],     # pass 2, same face
                      [400, 300, 460, 360]],   # another face
                     np.float32)
    scores = np.array([0.9, 0.8, 0.75], np.float32)
    kps = np.zeros((3, 6, 2), np.float32)
    kps[0, 0], kps[1, 0] = (130, 140), (140, 140)
    b, s, k = merge_detections(boxes, scores, kps)
    assert len(b) == 2
    np.testing.assert_allclose(s, [0.9, 0.75])
    np.testing.assert_allclose(b[0], (boxes[0] * 0.9 + boxes[1] * 0.8) / 1.7, rtol=1e-5)
    np.testing.assert_allclose(k[0, 0], ((130 * 0.9 + 140 * 0.8) / 1.7, 140), rtol=1e-5)


def test_merge_drops_a_part_of_a_face_found_at_another_scale():
    # A weaker box inside a bigger one (IoU 0.16, below the NMS threshold) is the same face.
    boxes = np.array([[100, 100, 300, 300], [150, 150, 230, 230]], np.float32)
    b, s, _ = merge_detections(boxes, np.array([0.9, 0.7], np.float32), np.zeros((2, 6, 2), np.float32))
    assert len(b) == 1 and s[0] == pytest.approx(0.9)
    np.testing.assert_allclose(b[0], boxes[0])
    # ... and the better-scored one wins whichever is bigger.
    assert list(suppress_contained(boxes, np.array([0.6, 0.95], np.float32))) == [1]
    # Boxes that only touch are two faces.
    apart = np.array([[0, 0, 100, 100], [90, 0, 190, 100]], np.float32)
    assert len(merge_detections(apart, np.array([0.9, 0.9], np.float32), np.zeros((2, 6, 2), np.float32))[0]) == 2


def test_merge_of_nothing():
    b, s, k = merge_detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 6, 2), np.float32))
    assert len(b) == len(s) == len(k) == 0


# --------------------------------------------------------------------------- aligned crops


def test_alignment_keeps_an_upright_face_unchanged(astronaut_bgr):
    box = ASTRONAUT_FACE
    level = ((200.0, 110.0), (255.0, 110.0))
    np.testing.assert_array_equal(crop_face(astronaut_bgr, box, 0.1, level), crop_face(astronaut_bgr, box, 0.1))
    # The real detector on the upright photograph: aligned and plain crops are the same pixels.
    plain = create_detector(DetectorConfig(align=False)).detect(astronaut_bgr)
    aligned = create_detector(DetectorConfig()).detect(astronaut_bgr)  # aligned crops are the default
    assert len(plain) == len(aligned) == 1
    assert abs(eye_angle(aligned[0].eyes)) < 5
    np.testing.assert_array_equal(plain[0].crop, aligned[0].crop)


def test_eye_angle_sign():
    assert eye_angle(((0, 0), (10, 0))) == 0
    assert eye_angle(((0, 0), (10, 10))) == pytest.approx(45)  # the eye on the image's right is lower
    assert eye_angle(((0, 10), (10, 0))) == pytest.approx(-45)


@pytest.mark.parametrize("angle", [20, -20, 30])
def test_alignment_turns_a_tilted_face_back_upright(astronaut_bgr, angle):
    h, w = astronaut_bgr.shape[:2]
    cx, cy = ASTRONAUT_FACE[0] + ASTRONAUT_FACE[2] / 2, ASTRONAUT_FACE[1] + ASTRONAUT_FACE[3] / 2
    tilted = cv2.warpAffine(astronaut_bgr, cv2.getRotationMatrix2D((cx, cy), angle, 1.0), (w, h),
                            borderMode=cv2.BORDER_REFLECT)
    upright = create_detector(DetectorConfig()).detect(astronaut_bgr)[0].crop.astype(np.float32)
    plain = create_detector(DetectorConfig(align=False)).detect(tilted)
    aligned = create_detector(DetectorConfig(align=True)).detect(tilted)
    assert len(plain) == len(aligned) == 1
    assert eye_angle(aligned[0].eyes) == pytest.approx(-angle, abs=6)  # counter-clockwise rotation lifts the right side

    def diff(crop):
        return float(np.abs(crop.astype(np.float32) - upright).mean())

    # Measured tilts of 5-20 degrees keep the plain crop and add the rotated one (both are classified); from 20 on
    # the crop itself is rotated.
    face = aligned[0]
    if abs(eye_angle(face.eyes)) < 20:
        assert face.upright is not None and np.array_equal(face.crop, plain[0].crop)
        assert diff(face.upright) < 0.75 * diff(plain[0].crop)
    else:
        assert face.upright is None and diff(face.crop) < 0.75 * diff(plain[0].crop)


def test_stats_payload_carries_the_detector():
    import jsonschema

    from edge.payloads import stats_event
    from edge.publish import SCHEMAS_DIR

    det = {"type": "auto", "passes": "auto (short@0.57 + short@0.23; min_score 0.7)",
           "latency_ms": {"short@0.57": 11.2, "short@0.23": 2.9, "merge+crop": 0.3}}
    payload = stats_event("d1", 1.0, 30.0, {"capture": 1, "detect": 14.4, "classify": 0.5, "track": 0.1, "publish": 0.1},
                          "cpu", 10, 0, 0, 0, 5.0, None, {}, 1, True, detector=det)
    assert payload["detector"] == det
    schema = json.loads((SCHEMAS_DIR / "stats.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(payload)
    assert "detector" not in stats_event("d1", 1.0, 30.0, {}, "cpu", 10, 0, 0, 0, 5.0, None, {}, 1, True)


def test_doctor_names_the_detector_and_its_passes():
    from edge.config import Config
    from edge.doctor import check_detector

    row = check_detector(Config())
    assert row.ok and row.name == "detector"
    assert row.detail.startswith("auto (short@0.7 + short@0.4 + short; min_score 0.65; second look from 0.5; "
                                 "pyramid every 5 frames")
    assert "ms per 640x480 frame" in row.detail and "short@0.7" in row.detail.split(":", 1)[1]
    bad = check_detector(Config.model_validate({"detector": {"type": "haar", "min_size": 10}}))
    assert bad.ok  # Haar has no passes; the row still says what runs
