"""FaceTracker: stable ids, smoothing, hysteresis, min_hits, expiry."""

from __future__ import annotations

import numpy as np

from edge.detect import Face
from edge.manifest import FER_LABELS
from edge.track import FaceTracker, TrackerConfig, greedy_match, iou_matrix

HAPPY, SAD, NEUTRAL = FER_LABELS.index("happy"), FER_LABELS.index("sad"), FER_LABELS.index("neutral")


def face(x, y, w=60, h=60):
    return Face(box=(x, y, w, h), score=0.9, crop=np.zeros((48, 48), np.uint8))


def probs(**p):
    v = np.zeros(7, np.float32)
    for k, x in p.items():
        v[FER_LABELS.index(k)] = x
    rest = 1.0 - v.sum()
    v[v == 0] = rest / (v == 0).sum()
    return v


def test_ids_stay_with_moving_faces_and_new_faces_get_new_ids():
    tr = FaceTracker(TrackerConfig(min_hits=1), FER_LABELS)
    s = np.stack([probs(happy=0.8), probs(sad=0.8)])
    first = tr.update([face(0, 0), face(300, 0)], s, ts=0.0)
    ids = {t.box[0]: t.face_id for t in first}
    assert len(set(ids.values())) == 2
    # Both faces move a little, listed in the other order: ids follow the faces, not list order.
    second = tr.update([face(310, 5), face(8, 4)], s[::-1], ts=0.1)
    by_x = {t.box[0]: t for t in second}
    assert by_x[8].face_id == ids[0] and by_x[310].face_id == ids[300]
    assert by_x[8].expression == "happy" and by_x[310].expression == "sad"
    # A third face far away starts a new track.
    third = tr.update([face(12, 6), face(315, 8), face(150, 200)], np.stack([s[0], s[1], s[0]]), ts=0.2)
    assert len({t.face_id for t in third}) == 3
    assert max(t.face_id for t in third) not in ids.values()


def test_min_hits_delays_the_first_report():
    tr = FaceTracker(TrackerConfig(min_hits=3), FER_LABELS)
    s = probs(happy=0.9)[None]
    assert tr.update([face(0, 0)], s, 0.0) == []
    assert tr.update([face(1, 0)], s, 0.1) == []
    (t,) = tr.update([face(2, 0)], s, 0.2)
    assert t.expression == "happy" and t.changed and t.hits == 3
    (t,) = tr.update([face(2, 0)], s, 0.3)
    assert not t.changed


def test_equal_scores_are_reported_as_the_more_frequent_class():
    tied = probs(angry=0.4, sad=0.4)
    (t,) = FaceTracker(TrackerConfig(min_hits=1), FER_LABELS).update([face(0, 0)], tied[None], 0.0)
    assert t.expression == "angry"  # plain argmax: the lowest index
    prior = [0.14, 0.02, 0.14, 0.25, 0.17, 0.11, 0.17]  # FER2013 Training shares
    (t,) = FaceTracker(TrackerConfig(min_hits=1), FER_LABELS, prior).update([face(0, 0)], tied[None], 0.0)
    assert t.expression == "sad"


def test_smoothing_weights_the_new_observation():
    tr = FaceTracker(TrackerConfig(min_hits=1, smoothing=0.25), FER_LABELS)
    a, b = probs(happy=0.9), probs(sad=0.9)
    tr.update([face(0, 0)], a[None], 0.0)
    (t,) = tr.update([face(0, 0)], b[None], 0.1)
    np.testing.assert_allclose(t.scores, 0.75 * a + 0.25 * b, rtol=1e-6)
    assert t.expression == "happy"
    assert abs(t.confidence - t.scores[HAPPY]) < 1e-6


def test_hysteresis_prevents_flicker_between_close_classes():
    tr = FaceTracker(TrackerConfig(min_hits=1, smoothing=1.0, hysteresis=0.1), FER_LABELS)
    changes = []
    # Raw top class alternates every frame, but happy and neutral are within 0.1 of each other.
    for i in range(20):
        p = probs(happy=0.46, neutral=0.42) if i % 2 == 0 else probs(happy=0.42, neutral=0.46)
        (t,) = tr.update([face(0, 0)], p[None], i * 0.1)
        changes.append(t.changed)
    assert t.expression == "happy"
    assert changes.count(True) == 1  # only the first report
    # A clear change does switch, once.
    (t,) = tr.update([face(0, 0)], probs(neutral=0.7, happy=0.2)[None], 2.0)
    assert t.expression == "neutral" and t.changed
    (t,) = tr.update([face(0, 0)], probs(neutral=0.7, happy=0.2)[None], 2.1)
    assert t.expression == "neutral" and not t.changed


def test_without_hysteresis_the_same_sequence_flickers():
    # The control for the test above: hysteresis is what stops the flicker.
    tr = FaceTracker(TrackerConfig(min_hits=1, smoothing=1.0, hysteresis=0.0), FER_LABELS)
    n = 0
    for i in range(10):
        p = probs(happy=0.46, neutral=0.42) if i % 2 == 0 else probs(happy=0.42, neutral=0.46)
        (t,) = tr.update([face(0, 0)], p[None], i * 0.1)
        n += t.changed
    assert n == 10


def test_tracks_survive_short_gaps_and_expire_after_expire_s():
    tr = FaceTracker(TrackerConfig(min_hits=1, expire_s=1.0), FER_LABELS)
    (t,) = tr.update([face(0, 0)], probs(happy=0.9)[None], 10.0)
    fid = t.face_id
    (t,) = tr.update([], np.zeros((0, 7)), 10.5)  # missed detection: still live, last_seen older
    assert t.face_id == fid and t.last_seen == 10.0
    (t,) = tr.update([face(2, 2)], probs(happy=0.9)[None], 10.9)
    assert t.face_id == fid  # re-matched, same id
    assert tr.update([], np.zeros((0, 7)), 12.0) == []
    assert tr.tracks == []
    (t,) = tr.update([face(2, 2)], probs(happy=0.9)[None], 12.1)
    assert t.face_id != fid and t.changed


def test_greedy_match_prefers_the_best_overlap():
    iou = iou_matrix([(0, 0, 10, 10), (5, 0, 10, 10)], [(4, 0, 10, 10), (100, 100, 5, 5)])
    assert greedy_match(iou, 0.3) == [(1, 0)]
