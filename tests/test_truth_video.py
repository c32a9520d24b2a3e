"""bench e2e's labelled video (bench/e2e_video.py) from a small FER2013-format CSV: which split's faces it shows."""

from __future__ import annotations

import json

import numpy as np


def _fer_csv(path):
    """Four faces per split; each split's label is its own (Training 0, PublicTest 3, PrivateTest 5)."""
    rng = np.random.default_rng(0)
    rows = ["emotion,pixels,Usage"]
    for label, usage in ((0, "Training"), (3, "PublicTest"), (5, "PrivateTest")):
        for _ in range(4):
            rows.append(f"{label},{' '.join(map(str, rng.integers(0, 256, 48 * 48)))},{usage}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_truth_video_shows_the_split_asked_for(tmp_path):
    from bench.e2e_video import build_truth_video

    data = _fer_csv(tmp_path / "fer.csv")
    for split, label in (("PrivateTest", 5), ("PublicTest", 3)):
        mp4 = build_truth_video(data, tmp_path / "videos", faces_per_size=2, sizes=(100,), empty_shots=1, split=split)
        meta = json.loads(mp4.with_suffix(".json").read_text())
        labels = {f["label"] for frame in meta["frames"] for f in frame}
        assert labels == {label} and meta["source"] == f"FER2013 {split}"
        # The benchmark keeps its old file name; another split gets its own, so neither cache hides the other.
        assert mp4.name.endswith("_publictest.mp4") == (split == "PublicTest")
