"""``fer-edge analyze`` on a real image and a real video, with a real int8 model."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge import analyze
from edge.errors import DataError
from edge.manifest import FER_LABELS
from tests.conftest import ASTRONAUT_FACE, box_iou

pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")
ROOT = Path(__file__).resolve().parents[1]


def parse(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fer-edge analyze")
    analyze.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


@pytest.fixture(scope="module")
def media(tmp_path_factory, astronaut_bgr):
    """A folder with the astronaut as a PNG and as a 6-frame video (moving a little), plus a blank image."""
    d = tmp_path_factory.mktemp("media")
    cv2.imwrite(str(d / "astronaut.png"), astronaut_bgr)
    cv2.imwrite(str(d / "blank.png"), np.full((200, 200, 3), 128, np.uint8))
    writer = cv2.VideoWriter(str(d / "astronaut.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (512, 512))
    for i in range(6):
        writer.write(np.roll(astronaut_bgr, 4 * i, axis=1))
    writer.release()
    return d


def test_image_gives_one_record_on_the_face(media, standin_model, tmp_path):
    out = tmp_path / "out.jsonl"
    rc = analyze.run(parse(media / "astronaut.png", "--model", standin_model, "--accelerator", "cpu", "--output", out))
    assert rc == 0
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert rec["path"].endswith("astronaut.png") and rec["frame"] == 0 and rec["face"] == 0 and rec["time_s"] is None
    assert box_iou(rec["box"], ASTRONAUT_FACE) > 0.5
    assert list(rec["scores"]) == FER_LABELS
    assert abs(sum(rec["scores"].values()) - 1) < 1e-3
    assert rec["expression"] == max(rec["scores"], key=rec["scores"].get)
    assert rec["confidence"] == rec["scores"][rec["expression"]]


def test_video_every_second_frame_as_csv(media, standin_model, tmp_path):
    out = tmp_path / "out.csv"
    rc = analyze.run(parse(media / "astronaut.mp4", "--every", 2, "--format", "csv", "--model", standin_model,
                           "--accelerator", "cpu", "-o", out))
    assert rc == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["frame"]) for r in rows] == [0, 2, 4]
    assert [float(r["time_s"]) for r in rows] == [0.0, 0.2, 0.4]
    for i, r in enumerate(rows):
        x, y, w, h = (int(r[k]) for k in "xywh")
        assert box_iou((x, y, w, h), (ASTRONAUT_FACE[0] + 8 * i, *ASTRONAUT_FACE[1:])) > 0.5
        assert r["expression"] in FER_LABELS
        assert abs(sum(float(r[k]) for k in FER_LABELS) - 1) < 1e-3


def test_video_with_the_int8_detector_follows_the_face(media, standin_model, tmp_path):
    out = tmp_path / "out.jsonl"
    rc = analyze.run(parse(media / "astronaut.mp4", "--precision", "int8", "--model", standin_model,
                           "--accelerator", "cpu", "-o", out))
    assert rc == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["frame"] for r in recs] == list(range(6))
    for i, r in enumerate(recs):
        assert box_iou(r["box"], (ASTRONAUT_FACE[0] + 4 * i, *ASTRONAUT_FACE[1:])) > 0.5


def test_folder_is_expanded_and_unreadable_files_are_reported(media, standin_model, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in media.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.jpg").write_bytes(b"garbage")
    out = tmp_path / "out.jsonl"
    rc = analyze.run(parse(folder, "--model", standin_model, "--accelerator", "cpu", "-o", out))
    assert rc == 1  # broken.jpg could not be read...
    assert "broken.jpg" in capsys.readouterr().err
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    # ...but everything else is written: 6 video frames + 1 image, none for the blank image.
    assert sorted({Path(r["path"]).name for r in recs}) == ["astronaut.mp4", "astronaut.png"]
    assert len(recs) == 7


def test_missing_path_is_a_clear_error(standin_model):
    with pytest.raises(DataError, match="nope.png not found"):
        analyze.run(parse("nope.png", "--model", standin_model))


def test_cli_analyze(media, standin_model):
    from edge import cli as edge_cli  # noqa: F401 - owned by the daemon helper

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    help_text = subprocess.run([sys.executable, "-m", "fer_edge", "--help"], cwd=ROOT, env=env,
                               capture_output=True, text=True).stdout
    if " analyze" not in help_text:
        pytest.skip("edge/cli.py does not register `analyze` yet")
    proc = subprocess.run([sys.executable, "-m", "fer_edge", "analyze", str(media / "astronaut.png"), "--model",
                           str(standin_model), "--accelerator", "cpu"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (rec,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert box_iou(rec["box"], ASTRONAUT_FACE) > 0.5
    bad = subprocess.run([sys.executable, "-m", "fer_edge", "analyze", "nope.png", "--model", str(standin_model)],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "fer-edge: error: nope.png not found" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_bad_options_are_clear_errors(media, standin_model):
    with pytest.raises(DataError, match="invalid --margin 5.0"):
        analyze.run(parse(media / "astronaut.png", "--model", standin_model, "--margin", 5))
    with pytest.raises(DataError, match="--every must be 1 or more"):
        analyze.run(parse(media / "astronaut.png", "--model", standin_model, "--every", 0))
