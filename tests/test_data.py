"""FER2013 loader on good and malformed fixtures (made here; the real data is never needed)."""

import gzip

import cv2
import numpy as np
import pytest

from convert.data import load_fer2013, load_split, normalize, read_fer_csv, stratified_sample
from edge.errors import DataError

HEADER = "emotion,pixels,Usage\n"


def _row(label, usage, value=7, n=2304):
    return f"{label},{' '.join([str(value)] * n)},{usage}\n"


def _write(path, rows, gz=False):
    text = HEADER + "".join(rows)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_reads_splits_plain_and_gz(tmp_path, gz):
    rows = [_row(3, "Training", 10), _row(0, "Training", 20), _row(6, "PublicTest", 30), _row(5, "PrivateTest", 40)]
    path = _write(tmp_path / ("f.csv.gz" if gz else "f.csv"), rows, gz)
    data = read_fer_csv(path)
    assert set(data) == {"Training", "PublicTest", "PrivateTest"}
    x, y = data["Training"]
    assert x.shape == (2, 48, 48) and x.dtype == np.uint8
    assert y.tolist() == [3, 0]
    assert int(x[1, 0, 0]) == 20
    assert data["PrivateTest"][1].tolist() == [5]


@pytest.mark.parametrize("bad,needle", [
    (_row(3, "Training", n=2303), "2303 pixels"),
    (_row(9, "Training"), "label '9'"),
    ("x," + " ".join(["1"] * 2304) + ",Training\n", "label 'x'"),
    ("3," + " ".join(["1"] * 2303) + " a,Training\n", "not all integers"),
    (_row(3, "Training", value=300), "0..255"),
    (_row(3, "Validation"), "Usage 'Validation'"),
    ("3,1 2 3\n", "expected 3 fields"),
])
def test_malformed_row_names_file_and_line(tmp_path, bad, needle):
    path = _write(tmp_path / "bad.csv", [_row(0, "Training"), bad])
    with pytest.raises(DataError) as err:
        read_fer_csv(path)
    msg = str(err.value)
    assert f"{path}:3" in msg and needle in msg
    assert "\n" not in msg


def test_missing_file_and_bad_header(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_fer2013(tmp_path / "nope.csv")
    (tmp_path / "h.csv").write_text("a,b,c\n")
    with pytest.raises(DataError, match="header"):
        read_fer_csv(tmp_path / "h.csv")


def test_cache_roundtrip_and_load_split(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_EDGE_CACHE", str(tmp_path / "cache"))
    path = _write(tmp_path / "f.csv", [_row(1, "Training", 5), _row(2, "PublicTest", 6)])
    first = load_split(path, "PublicTest")
    assert list((tmp_path / "cache").glob("*.npz"))
    second = load_split(path, "PublicTest")  # from the cache
    assert np.array_equal(first[0], second[0]) and first[1].tolist() == second[1].tolist() == [2]
    with pytest.raises(DataError, match="no PrivateTest"):
        load_split(path, "PrivateTest")


def test_image_folder_layout(tmp_path):
    for part, cls, name, value in [("train", "happy", "a.png", 50), ("train", "angry", "b.jpg", 60),
                                   ("test", "sad", "PublicTest_1.png", 70), ("test", "fear", "x.png", 80)]:
        d = tmp_path / part / cls
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / name), np.full((64, 64), value, np.uint8))
    data = load_fer2013(tmp_path)
    assert sorted(data["Training"][1].tolist()) == [0, 3]
    assert data["PublicTest"][1].tolist() == [4]
    assert data["PrivateTest"][1].tolist() == [2]
    assert data["Training"][0].shape[1:] == (48, 48)
    (tmp_path / "train" / "grumpy").mkdir()
    with pytest.raises(DataError, match="unknown class folder"):
        load_fer2013(tmp_path)


def test_normalize_and_stratified_sample():
    x = np.array([[[0, 255]]], np.uint8)
    assert normalize(x).shape == (1, 1, 2, 1)
    assert np.allclose(normalize(x)[0, 0, :, 0], [-1, 1])
    y = np.array([0] * 90 + [1] * 10)
    idx = stratified_sample(y, 20, seed=1)
    assert len(idx) == 20 and len(set(idx.tolist())) == 20
    assert (y[idx] == 1).sum() == 2
