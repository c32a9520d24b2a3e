"""FER2013 loading: the Kaggle CSV (``emotion,pixels,Usage``, plain or ``.gz``) and image folders.

Both give, per split, ``x``: uint8 ``[N, 48, 48]`` grayscale and ``y``: int64 ``[N]`` labels in
``0..6`` (angry, disgust, fear, happy, sad, surprise, neutral). Splits follow ``Usage``:
``Training`` (train), ``PublicTest`` (validation, early stopping), ``PrivateTest`` (benchmark: never
train or tune on it).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
from pathlib import Path

import numpy as np

from edge.errors import DataError
from edge.manifest import FER_LABELS

SPLITS = ("Training", "PublicTest", "PrivateTest")
SIDE = 48
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm"}
# Folder names used by the common image-folder layouts (Kaggle msambare/fer2013 and others).
_CLASS_ALIASES = {name: i for i, name in enumerate(FER_LABELS)}
_CLASS_ALIASES.update({"anger": 0, "disgusted": 1, "fearful": 2, "happiness": 3, "sadness": 4,
                       "surprised": 5, "contempt": None})


def _cache_dir() -> Path:
    return Path(os.environ.get("FER_EDGE_CACHE", Path.home() / ".cache" / "fer-edge"))


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_fer_csv(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Parse a FER2013 CSV into ``{split: (x, y)}``.

    ``path``: ``fer2013.csv`` or ``fer2013.csv.gz`` with header ``emotion,pixels,Usage``.
    A malformed row stops the load with a ``DataError`` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"FER2013 file {path} not found; pass the path of fer2013.csv[.gz] (--data)")
    xs: dict[str, list[np.ndarray]] = {}
    ys: dict[str, list[int]] = {}
    try:
        with _open_text(path) as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:3]] != ["emotion", "pixels", "Usage"]:
                raise DataError(f"{path}:1: header must be 'emotion,pixels,Usage', got {header!r}; "
                                "is this the Kaggle FER2013 CSV?")
            for lineno, row in enumerate(reader, start=2):
                where = f"{path}:{lineno}"
                if len(row) != 3:
                    raise DataError(f"{where}: expected 3 fields (emotion,pixels,Usage), got {len(row)}; "
                                    "fix or remove the row")
                label_s, pixels_s, usage = row[0].strip(), row[1], row[2].strip()
                if not label_s.isdigit() or not 0 <= int(label_s) < len(FER_LABELS):
                    raise DataError(f"{where}: label {label_s!r} is not an integer in 0..{len(FER_LABELS) - 1}; "
                                    "fix or remove the row")
                try:
                    pixels = np.array(pixels_s.split(), dtype=np.int32)
                except ValueError:
                    raise DataError(f"{where}: pixels are not all integers; fix or remove the row") from None
                if pixels.size != SIDE * SIDE:
                    raise DataError(f"{where}: {pixels.size} pixels, expected {SIDE * SIDE} (48x48); "
                                    "fix or remove the row")
                if pixels.min() < 0 or pixels.max() > 255:
                    raise DataError(f"{where}: pixel values must be in 0..255; fix or remove the row")
                if usage not in SPLITS:
                    raise DataError(f"{where}: Usage {usage!r} is not one of {', '.join(SPLITS)}")
                xs.setdefault(usage, []).append(pixels.astype(np.uint8).reshape(SIDE, SIDE))
                ys.setdefault(usage, []).append(int(label_s))
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot be read ({exc}); re-download the file") from None
    if not xs:
        raise DataError(f"{path}: no data rows; is this the FER2013 CSV?")
    return {s: (np.stack(xs[s]), np.asarray(ys[s], dtype=np.int64)) for s in xs}


def read_image_folders(root: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the image-folder layout ``root/{train,test}/<class>/*.jpg`` into ``{split: (x, y)}``.

    ``train`` becomes ``Training``. In ``test``, files named ``PublicTest_*`` / ``PrivateTest_*``
    (the Kaggle msambare layout) keep their split; other files go to ``PrivateTest``. Images are
    converted to 48x48 grayscale.
    """
    import cv2

    root = Path(root)
    xs: dict[str, list[np.ndarray]] = {}
    ys: dict[str, list[int]] = {}
    for part, default_split in (("train", "Training"), ("test", "PrivateTest")):
        part_dir = root / part
        if not part_dir.is_dir():
            continue
        for class_dir in sorted(p for p in part_dir.iterdir() if p.is_dir()):
            key = class_dir.name.lower()
            if key not in _CLASS_ALIASES:
                raise DataError(f"{class_dir}: unknown class folder {class_dir.name!r}; expected one of "
                                f"{', '.join(FER_LABELS)}")
            label = _CLASS_ALIASES[key]
            if label is None:
                continue  # FER+ 'contempt' has no FER2013 class
            for img_path in sorted(class_dir.iterdir()):
                if img_path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                img = cv2.imread(str(img_path), cv2.IMREAD_GRAYSCALE)
                if img is None:
                    raise DataError(f"{img_path}: not a readable image; remove or replace it")
                if img.shape != (SIDE, SIDE):
                    img = cv2.resize(img, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
                split = default_split
                for s in SPLITS:
                    if img_path.name.startswith(s + "_"):
                        split = s
                xs.setdefault(split, []).append(img)
                ys.setdefault(split, []).append(label)
    if not xs:
        raise DataError(f"{root}: no images found; expected {root}/train/<class>/*.jpg and {root}/test/<class>/*.jpg")
    return {s: (np.stack(xs[s]), np.asarray(ys[s], dtype=np.int64)) for s in xs}


def load_fer2013(path: str | Path, cache: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Load FER2013 from a CSV (``.csv``/``.csv.gz``), an image-folder root, or a pre-parsed ``.npz``.

    ``cache``: keep a parsed ``.npz`` copy under ``$FER_EDGE_CACHE`` (default ``~/.cache/fer-edge``)
    keyed by the file's path, size and mtime, so repeated runs skip the slow CSV parse.
    """
    path = Path(path)
    if path.is_dir():
        return read_image_folders(path)
    if path.suffix == ".npz":  # pre-parsed arrays (the cache format): <split>_x, <split>_y
        with np.load(path) as z:
            return {s: (z[f"{s}_x"], z[f"{s}_y"]) for s in SPLITS if f"{s}_x" in z}
    if not path.exists():
        raise DataError(f"FER2013 data {path} not found; pass fer2013.csv[.gz] or an image-folder root (--data)")
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = _cache_dir() / f"fer2013-{key}.npz"
    if cache and cached.is_file():
        with np.load(cached) as z:
            return {s: (z[f"{s}_x"], z[f"{s}_y"]) for s in SPLITS if f"{s}_x" in z}
    data = read_fer_csv(path)
    if cache:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".tmp.npz")
            np.savez(tmp, **{f"{s}_{k}": v for s, (x, y) in data.items() for k, v in (("x", x), ("y", y))})
            tmp.replace(cached)
        except OSError:
            pass  # a cache we cannot write is only slower
    return data


def load_split(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split of FER2013: ``(x uint8 [N,48,48], y int64 [N])``. ``split``: Training | PublicTest | PrivateTest."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    data = load_fer2013(path)
    if split not in data:
        raise DataError(f"{path} has no {split} rows")
    return data[split]


# Every model trains on (pixel - TRAIN_MEAN) / TRAIN_STD, i.e. [-1, 1]; the float model keeps it.
TRAIN_MEAN = 127.5
TRAIN_STD = 127.5


def normalize(x_uint8: np.ndarray, mean: float = TRAIN_MEAN, std: float = TRAIN_STD) -> np.ndarray:
    """uint8 ``[N,48,48]`` -> float32 ``[N,48,48,1]`` as the model contract says: (pixel - mean) / std."""
    x = (x_uint8.astype(np.float32) - mean) / std
    return x[..., None] if x.ndim == 3 else x


def stratified_sample(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of ``n`` samples drawn from ``y`` in proportion to each class (at least one per class present)."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    n = min(n, len(y))
    quota = np.maximum(1, np.round(counts / counts.sum() * n).astype(int))
    idx = [rng.choice(np.flatnonzero(y == c), size=min(q, cnt), replace=False)
           for c, q, cnt in zip(classes, quota, counts)]
    out = np.concatenate(idx)
    rng.shuffle(out)
    return out[:n]
