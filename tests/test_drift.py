"""Quantization drift: metrics on a hand-computed case, int8 inference on a real TFLite model,
reports, the verdict and the ``drift`` command end to end (tiny real models, 120 images)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from convert import drift
from convert.drift_metrics import KL_EPS, compute_drift, drift_verdict
from convert.drift_report import format_summary, write_drift_report
from edge.int8 import quantize_input
from tests.convert_model_fixtures import make_model, representative_images

# --------------------------------------------------------------------------- hand-computed case
A, B, C = [0.8, 0.1, 0.1, 0.0], [0.1, 0.8, 0.1, 0.0], [0.1, 0.1, 0.8, 0.0]
LABELS = ["a", "b", "c", "d"]  # "d" never occurs: no images, never predicted
Y = [0, 0, 0, 1, 1, 2]
FLOAT = [A, A, B, B, B, C]  # predicts 0 0 1 1 1 2 -> 5/6 right
INT8 = [A, B, B, B, A, C]   # predicts 0 1 1 1 0 2 -> 3/6 right; same top-1 on 4 of 6


def test_compute_drift_hand_computed():
    r = compute_drift(Y, FLOAT, INT8, LABELS)
    assert r["n"] == 6
    assert r["float_accuracy"] == pytest.approx(5 / 6)
    assert r["int8_accuracy"] == pytest.approx(3 / 6)
    assert r["accuracy_drop_points"] == pytest.approx(100 / 3)
    assert r["agreement"] == pytest.approx(4 / 6) and r["disagreements"] == 2
    assert r["confusion_float"] == [[2, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert r["confusion_int8"] == [[1, 2, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    pc = r["per_class"]
    # float: a recall 2/3 precision 1 -> F1 0.8; b recall 1 precision 2/3 -> 0.8; c 1.
    assert pc["a"]["float_recall"] == pytest.approx(2 / 3) and pc["a"]["float_f1"] == pytest.approx(0.8)
    assert pc["b"]["float_precision"] == pytest.approx(2 / 3) and pc["b"]["float_f1"] == pytest.approx(0.8)
    # int8: a recall 1/3 precision 1/2 -> F1 0.4; b recall 1/2 precision 1/3 -> 0.4; c 1.
    assert pc["a"]["int8_recall"] == pytest.approx(1 / 3) and pc["a"]["int8_f1"] == pytest.approx(0.4)
    assert pc["b"]["int8_recall"] == pytest.approx(0.5) and pc["b"]["int8_precision"] == pytest.approx(1 / 3)
    assert pc["a"]["recall_delta"] == pytest.approx(-1 / 3) and pc["b"]["f1_delta"] == pytest.approx(-0.4)
    assert pc["c"]["float_f1"] == pc["c"]["int8_f1"] == 1.0 and pc["c"]["recall_delta"] == 0.0
    assert pc["a"]["support"] == 3 and pc["d"]["support"] == 0
    # A class with no images and no predictions has no recall/F1 and stays out of macro-F1.
    assert pc["d"]["float_recall"] is None and pc["d"]["int8_f1"] is None
    assert r["float_macro_f1"] == pytest.approx(2.6 / 3)
    assert r["int8_macro_f1"] == pytest.approx(1.8 / 3)
    assert r["macro_f1_drop_points"] == pytest.approx(80 / 3)
    # KL(A||B) = KL(B||A) = 0.7 ln 8 on rows 1 and 4, 0 elsewhere (the zero column is eps-clipped).
    assert r["max_kl"] == pytest.approx(0.7 * math.log(8), rel=1e-4)
    assert r["mean_kl"] == pytest.approx(2 * 0.7 * math.log(8) / 6, rel=1e-4)
    json.dumps(r)  # JSON-ready as returned


def test_int8_ties_go_to_the_more_frequent_class_with_a_prior():
    # The int8 scores tie between "a" and "c" on both images; float says "c" on both.
    tied = [0.45, 0.05, 0.45, 0.05]
    floats, int8 = [[0.40, 0.05, 0.50, 0.05]] * 2, [tied] * 2
    plain = compute_drift([2, 2], floats, int8, LABELS)
    assert plain["int8_top_ties"] == 2 and plain["tie_break"] == "lowest_index"
    assert plain["agreement"] == 0.0 and plain["int8_accuracy"] == 0.0  # argmax takes "a", the lower index
    prior = [0.1, 0.2, 0.6, 0.1]  # "c" is the more frequent class in training
    r = compute_drift([2, 2], floats, int8, LABELS, prior)
    assert r["tie_break"] == "class_prior" and r["agreement"] == 1.0 and r["int8_accuracy"] == 1.0
    assert r["agreement_lowest_index"] == 0.0
    assert "int8 top-score ties | | 2 | to the more frequent class" in format_summary(r)
    # A prior never overrides a strict maximum.
    assert compute_drift([0], [A], [A], LABELS, [0.0, 0.0, 1.0, 0.0])["agreement"] == 1.0


def test_kl_is_finite_when_int8_scores_are_zero():
    r = compute_drift([0], [[1.0, 0.0]], [[0.0, 1.0]], ["x", "y"])
    assert math.isfinite(r["mean_kl"]) and r["mean_kl"] == pytest.approx(math.log(1 / KL_EPS), rel=1e-3)
    same = compute_drift([0, 1], [[0.6, 0.4], [0.3, 0.7]], [[0.6, 0.4], [0.3, 0.7]], ["x", "y"])
    assert same["mean_kl"] == pytest.approx(0.0, abs=1e-12) and same["agreement"] == 1.0


def test_compute_drift_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="expected scores shaped"):
        compute_drift([0, 1], [[1, 0], [0, 1]], [[1, 0]], ["x", "y"])
    with pytest.raises(ValueError, match="labels must be in"):
        compute_drift([0, 5], [[1, 0], [0, 1]], [[1, 0], [0, 1]], ["x", "y"])


def test_drift_verdict_thresholds():
    r = compute_drift(Y, FLOAT, INT8, LABELS)
    ok, reasons = drift_verdict(r, max_drop=1.0, min_agreement=0.97)
    assert not ok and len(reasons) == 2
    assert "33.33 points" in reasons[0] and "66.67%" in reasons[1]
    ok, reasons = drift_verdict(r, max_drop=34.0, min_agreement=0.6)
    assert ok and reasons == []
    ok, reasons = drift_verdict(r, max_drop=34.0, min_agreement=0.7)
    assert not ok and reasons[0].startswith("top-1 agreement")


def test_quantize_input_matches_contract():
    # mean = std = 127.5 with the int8 input quantization a full-int8 conversion produces.
    px = np.arange(256, dtype=np.uint8)
    q = quantize_input(px, 127.5, 127.5, 0.007843137718737125, -1, np.int8)
    assert q.dtype == np.int8 and q.min() == -128 and q.max() >= 126
    assert np.all(np.abs(q.astype(int) - (px.astype(int) - 128)) <= 1)  # pixel - 128, within one step
    assert np.all(np.diff(q.astype(int)) >= 0)  # monotonic
    u = quantize_input(px, 0.0, 255.0, 1 / 255, 0, np.uint8)
    assert np.array_equal(u, px)
    f = quantize_input(px, 127.5, 127.5, 0.0, 0, np.float32)
    assert f.dtype == np.float32 and f[0] == -1.0 and f[-1] == 1.0


def test_write_drift_report(tmp_path):
    r = compute_drift(Y, FLOAT, INT8, LABELS)
    ok, reasons = drift_verdict(r)
    r["verdict"] = {"ok": ok, "reasons": reasons}
    paths = write_drift_report(r, tmp_path / "rep", "tiny")
    for key in ("markdown", "json", "confusion_float", "confusion_int8", "recall"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0, key
    for key in ("confusion_float", "confusion_int8", "recall"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = json.loads(paths["json"].read_text())
    assert back["confusion_int8"] == r["confusion_int8"]
    assert back["per_class"]["d"]["float_recall"] is None
    md = paths["markdown"].read_text()
    assert "Verdict: FAIL" in md and "| a | 3 | 66.7% | 33.3% | -33.3 pts |" in md
    assert "tiny_confusion_int8.png" in md


def test_summary_is_a_compact_table():
    r = compute_drift(Y, FLOAT, INT8, LABELS)
    text = format_summary(r, drift_verdict(r, 50, 0.5))
    lines = text.splitlines()
    assert len(lines) <= 16
    assert "| accuracy | 83.33% | 50.00% | -33.33 pts |" in lines
    assert lines[-1].startswith("Verdict: PASS")


# --------------------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    pytest.importorskip("tensorflow")
    d = tmp_path_factory.getbasetemp() / "convert_models"  # shared with test_edgetpu
    return {k: make_model(d, k) for k in ("good", "float_io")}


@pytest.fixture(scope="module")
def eval_npz(tmp_path_factory):
    x = representative_images(120, seed=7)
    y = np.random.default_rng(7).integers(0, 7, len(x))
    p = tmp_path_factory.mktemp("data") / "eval.npz"
    np.savez(p, x=x, y=y)
    return p


def test_predict_int8_matches_tflite_own_quantize(models):
    x = representative_images(40, seed=5)
    ours = drift.predict_int8(models["good"], x, 127.5, 127.5, progress=False)
    # The same network converted with float input/output: TFLite's QUANTIZE/DEQUANTIZE do the work.
    theirs = drift.predict_int8(models["float_io"], x, 127.5, 127.5, progress=False)
    assert ours.shape == (40, 7) and ours.dtype == np.float32
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=0.05)
    # Same quantized input (quantize_input mirrors TFLite's QUANTIZE kernel), same int8 graph.
    np.testing.assert_array_equal(ours, theirs)


def test_predict_int8_close_to_float_keras(models):
    x = representative_images(40, seed=6)
    keras_path = models["good"].with_name("good.keras")
    pf = drift.predict_float(keras_path, x, 127.5, 127.5, progress=False)
    pq = drift.predict_int8(models["good"], x, 127.5, 127.5, progress=False)
    r = compute_drift(np.zeros(len(x), int), pf, pq, [str(i) for i in range(7)])
    assert r["mean_kl"] < 0.01
    assert np.abs(pf - pq).max() < 0.05


def test_drift_command_end_to_end(models, eval_npz, tmp_path, capsys):
    from edge.manifest import FER_LABELS, ModelManifest, load_manifest, sha256_of, write_manifest

    tfl = tmp_path / "m" / "tiny.tflite"
    tfl.parent.mkdir()
    tfl.write_bytes(models["good"].read_bytes())
    keras_path = models["good"].with_name("good.keras")
    write_manifest(ModelManifest(name="tiny", labels=FER_LABELS, sha256=sha256_of(tfl)), tfl)
    out = tmp_path / "report"
    argv = ["--keras", str(keras_path), "--tflite", str(tfl), "--data", str(eval_npz), "--out", str(out),
            "--max-drop", "100", "--min-agreement", "0", "--update-manifest"]
    assert drift.main(argv) == 0
    stdout = capsys.readouterr().out
    assert "| metric | float | int8 | change |" in stdout and "Verdict: PASS" in stdout

    rep = json.loads((out / "tiny_drift.json").read_text())
    assert rep["n"] == 120 and rep["source"]["split"] == "PrivateTest"
    assert sum(map(sum, rep["confusion_float"])) == 120
    for name in ("tiny_drift.md", "tiny_confusion_float.png", "tiny_confusion_int8.png", "tiny_recall.png"):
        assert (out / name).is_file()

    m = load_manifest(tfl, check_sha=True)  # the sha256 still matches the unchanged .tflite
    assert m.sha256 == sha256_of(tfl)
    met = m.metrics.model_dump()
    assert met["int8_accuracy"] == pytest.approx(rep["int8_accuracy"], abs=1e-6)
    assert met["float_accuracy"] == pytest.approx(rep["float_accuracy"], abs=1e-6)
    assert met["agreement"] == pytest.approx(rep["agreement"], abs=1e-6)
    assert met["macro_f1"] == pytest.approx(rep["int8_macro_f1"], abs=1e-6)
    assert met["float_macro_f1"] == pytest.approx(rep["float_macro_f1"], abs=1e-6)
    assert met["mean_kl"] == pytest.approx(rep["mean_kl"], abs=1e-6)
    assert set(met["per_class_recall"]) == set(FER_LABELS)

    # Thresholds no model can meet: exit 1 with the reason printed.
    assert drift.main(argv[:-5] + ["--max-drop", "-101", "--min-agreement", "0", "--limit", "30"]) == 1
    stdout = capsys.readouterr().out
    assert "Verdict: FAIL" in stdout and "accuracy drops" in stdout
    assert json.loads((out / "tiny_drift.json").read_text())["n"] == 30


def test_drift_command_errors(models, eval_npz, tmp_path, capsys):
    keras_path = str(models["good"].with_name("good.keras"))
    base = ["--keras", keras_path, "--tflite", str(models["good"]), "--out", str(tmp_path / "r")]
    assert drift.main(base + ["--data", str(tmp_path / "nope.csv.gz")]) == 2
    bad = tmp_path / "bad.npz"
    np.savez(bad, pixels=np.zeros((2, 48, 48), np.uint8))
    assert drift.main(base + ["--data", str(bad)]) == 2
    # --update-manifest without a manifest beside the model.
    lone = tmp_path / "lone.tflite"
    lone.write_bytes(models["good"].read_bytes())
    argv = ["--keras", keras_path, "--tflite", str(lone), "--data", str(eval_npz), "--update-manifest"]
    assert drift.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("fer-edge: error: ") for e in err)
    assert "not found" in err[0] and "'x' and 'y'" in err[1] and "no manifest" in err[2]
