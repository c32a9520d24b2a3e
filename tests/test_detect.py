"""Face detectors on a real photograph: BlazeFace (real TFLite interpreter) and Haar."""

from __future__ import annotations

import numpy as np
import pytest

from edge.detect import (
    DETECTORS,
    BlazeFaceDetector,
    DetectorConfig,
    Face,
    create_detector,
    crop_face,
    ssd_anchor_centers,
    BLAZEFACE_SPECS,
    weighted_nms,
)
from edge.errors import ModelError
from tests.conftest import ASTRONAUT_FACE, box_iou


@pytest.mark.parametrize("kind", ["auto", "classroom", "driver", "blazeface_full", "blazeface_short", "blazeface_back", "haar"])
def test_detector_finds_the_astronaut_face(kind, astronaut_bgr):
    faces = create_detector(DetectorConfig(type=kind)).detect(astronaut_bgr)
    assert len(faces) == 1, [f.box for f in faces]
    face = faces[0]
    assert isinstance(face, Face)
    assert box_iou(face.box, ASTRONAUT_FACE) > 0.5, face.box
    assert 0.5 <= face.score <= 1.0
    assert face.crop.shape == (48, 48) and face.crop.dtype == np.uint8


def test_face_found_in_a_wide_frame_maps_back_to_frame_pixels(astronaut_bgr):
    # Letterboxing: the astronaut pasted into a wide 960x540 frame at an offset.
    frame = np.full((540, 960, 3), 90, np.uint8)
    frame[20:532, 400:912] = astronaut_bgr
    faces = create_detector().detect(frame)
    x, y, w, h = ASTRONAUT_FACE
    assert len(faces) == 1
    assert box_iou(faces[0].box, (x + 400, y + 20, w, h)) > 0.5, faces[0].box


def test_no_face_in_a_blank_frame():
    assert create_detector().detect(np.full((480, 640, 3), 128, np.uint8)) == []


def test_min_size_and_min_score_filter(astronaut_bgr):
    assert create_detector(DetectorConfig(min_size=200)).detect(astronaut_bgr) == []
    assert create_detector(DetectorConfig(min_score=0.999)).detect(astronaut_bgr) == []
    small = astronaut_bgr[::4, ::4].copy()  # face about 28 px: below a min_size of 48
    assert create_detector(DetectorConfig(min_size=48)).detect(small) == []


def test_anchor_counts_match_the_models():
    assert len(ssd_anchor_centers(BLAZEFACE_SPECS["blazeface_full"])) == 2304
    assert len(ssd_anchor_centers(BLAZEFACE_SPECS["blazeface_short"])) == 896
    centers = ssd_anchor_centers(BLAZEFACE_SPECS["blazeface_full"])
    assert centers.min() > 0 and centers.max() < 1


def test_weighted_nms_says_which_groups_hold_a_flagged_box():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [80, 80, 90, 90]], np.float32)
    scores = np.array([0.6, 0.9, 0.8, 0.7], np.float32)
    kps = np.zeros((4, 6, 2), np.float32)
    b, s, k, flags = weighted_nms(boxes, scores, 0.3, kps, np.array([True, False, False, True]))
    np.testing.assert_allclose(s, [0.9, 0.8, 0.7])
    assert flags.tolist() == [True, False, True]  # the first group holds the flagged weaker box
    # Integer bit masks are OR-ed: which passes found each group.
    assert weighted_nms(boxes, scores, 0.3, kps, np.array([1, 2, 4, 1]))[-1].tolist() == [3, 4, 1]
    assert len(weighted_nms(boxes, scores, 0.3)) == 2 and len(weighted_nms(boxes, scores, 0.3, kps)) == 3


def test_weighted_nms_merges_overlaps_and_keeps_separate_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    out, kept = weighted_nms(boxes, scores, 0.3)
    assert len(out) == 2
    np.testing.assert_allclose(kept, [0.9, 0.8])
    np.testing.assert_allclose(out[0], (boxes[0] * 0.9 + boxes[1] * 0.6) / 1.5, rtol=1e-5)
    np.testing.assert_allclose(out[1], boxes[2])


def test_crop_pads_faces_at_the_frame_edge():
    img = np.zeros((100, 100, 3), np.uint8)
    img[:, :50] = 255
    crop = crop_face(img, (0, 0, 40, 40), margin=0.2)
    assert crop.shape == (48, 48)
    assert crop[:, 0].min() == 255  # left padding repeats the white border, no black frame


def test_missing_blazeface_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="face_detection_full_range.tflite not found"):
        BlazeFaceDetector(DetectorConfig(type="blazeface_full"), model_dir=tmp_path)
    with pytest.raises(ModelError, match="face_detection_short_range.tflite not found"):
        BlazeFaceDetector(DetectorConfig(), model_dir=tmp_path)  # the default preset: short-range at two scales


def test_registry_keys():
    assert set(DETECTORS) == {"auto", "classroom", "driver", "blazeface_full", "blazeface_short", "blazeface_back", "haar"}
    assert DetectorConfig().type == "auto"


def test_both_faces_of_the_sample_clip_are_found_in_every_frame():
    from edge.camera import CameraConfig, open_source

    det = create_detector()
    counts = []
    with open_source(CameraConfig()) as src:
        for _ in range(30):
            counts.append(len(det.detect(src.read().image)))
    assert counts == [2] * 30


def test_crop_lift_moves_the_crop_up_by_box_heights():
    """lift raises the crop centre by lift x box height (BlazeFace's box centre sits below FER2013's crop centre)."""
    import numpy as np

    from edge.detect import BLAZEFACE_LIFT, BlazeFaceDetector, DetectorConfig, HaarDetector, crop_face

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    lifted = crop_face(image, (200, 200, 100, 100), 0.1, None, 0.1)
    assert np.array_equal(lifted, crop_face(image, (200, 190, 100, 100), 0.1))
    assert not np.array_equal(lifted, crop_face(image, (200, 200, 100, 100), 0.1))
    assert BlazeFaceDetector.default_lift == BLAZEFACE_LIFT > 0 and HaarDetector.default_lift == 0.0
    assert BlazeFaceDetector(DetectorConfig(type="driver", lift=0.0)).lift == 0.0
