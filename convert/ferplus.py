"""FER+ labels: Microsoft's 10-annotator votes for every FER2013 image (``fer2013new.csv``).

Barsoum et al. 2016 relabelled each FER2013 face with ten crowd annotators. The file has one row per
FER2013 row, in the same order, with columns ``Usage, Image name, neutral, happiness, surprise,
sadness, anger, disgust, fear, contempt, unknown, NF`` (vote counts; NF = not a face).

How the extra columns are handled, explicitly:
- ``contempt`` has no FER2013 class and ``unknown`` is no expression: both are dropped from the
  7-class vote distribution used as a training target.
- Faces whose highest count is ``NF`` (not a face), or with no vote on the seven classes, are
  dropped from training (``trainable``).
- The evaluation label is the **unique majority**: the highest count over all ten columns is held by
  one column only, and that column is one of the seven FER2013 emotions (3,350 PrivateTest faces).
  Other rows get ``-1`` and are left out of FER+ accuracy.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from edge.errors import DataError
from edge.int8 import top_classes
from edge.manifest import FER_LABELS

FERPLUS_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                   "contempt", "unknown", "NF")
# FER+ column index of each FER2013 class, in FER2013 order (angry, disgust, fear, happy, sad, surprise, neutral).
TO_FER2013 = np.array([4, 5, 6, 1, 3, 2, 0])
PLAUSIBLE_VOTES = 3  # "the top class is one that at least 3 of 10 annotators chose"


def read_votes(path: str | Path, split_sizes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Parse ``fer2013new.csv`` into ``{split: int votes [N, 10]}`` (columns as FERPLUS_COLUMNS).

    ``split_sizes``: the FER2013 row count per split (``{split: len(x)}``); when given, a file whose
    rows do not line up with FER2013 (another count, another order) is refused with a ``DataError``.
    FER2013's CSV holds each split as one contiguous block (Training, PublicTest, PrivateTest), so
    a FER+ file whose splits interleave, or come in another order, is refused too.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"FER+ file {path} not found; pass the path of fer2013new.csv (--ferplus)")
    votes: dict[str, list[list[int]]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if header[2:] != list(FERPLUS_COLUMNS):
            raise DataError(f"{path}:1: header must be 'Usage,Image name,{','.join(FERPLUS_COLUMNS)}', got "
                            f"{','.join(header)!r}; is this FER+'s fer2013new.csv?")
        for i, row in enumerate(reader):
            lineno = i + 2
            if len(row) != 12:
                raise DataError(f"{path}:{lineno}: expected 12 fields, got {len(row)}; the file is damaged")
            split = row[0].strip()
            if votes and split != list(votes)[-1] and split in votes:
                raise DataError(f"{path}:{lineno}: {split} rows resume after {list(votes)[-1]} rows; the rows must "
                                "be in fer2013.csv order (use the unmodified fer2013new.csv)")
            try:
                counts = [int(v) for v in row[2:]]
            except ValueError:
                raise DataError(f"{path}:{lineno}: vote counts must be integers, got {row[2:]!r}") from None
            votes.setdefault(split, []).append(counts)
    out = {s: np.asarray(v, dtype=np.int64) for s, v in votes.items()}
    if split_sizes is not None:  # the splits the FER2013 data holds (an .npz may omit PrivateTest)
        got = {s: len(v) for s, v in out.items() if s in split_sizes}
        want = {s: int(n) for s, n in split_sizes.items()}
        if list(got) != [s for s in want if s in got] or got != want:
            raise DataError(f"{path}: rows per split {got} do not match the FER2013 data {want}; pass the "
                            "fer2013new.csv that belongs to this fer2013.csv")
    return out


def distribution(votes: np.ndarray) -> np.ndarray:
    """Votes ``[N, 10]`` -> float32 ``[N, 7]`` distribution over the FER2013 classes (contempt,
    unknown and NF dropped, rows renormalised; a row with no vote on the seven is all zeros)."""
    seven = votes[:, TO_FER2013].astype(np.float32)
    total = seven.sum(1, keepdims=True)
    return np.divide(seven, total, out=np.zeros_like(seven), where=total > 0)


def trainable(votes: np.ndarray) -> np.ndarray:
    """Bool ``[N]``: rows usable as training targets (some vote on the seven classes; NF not the top count)."""
    seven = votes[:, TO_FER2013]
    return (seven.sum(1) > 0) & (votes[:, 9] < votes.max(1))


def majority(votes: np.ndarray) -> np.ndarray:
    """int64 ``[N]``: the FER2013 class id of the unique majority over all ten columns, else -1."""
    top = votes.max(1, keepdims=True)
    unique = ((votes == top).sum(1) == 1) & (top[:, 0] > 0)
    col = votes.argmax(1)
    fer = np.full(len(votes), -1, dtype=np.int64)
    for cls, c in enumerate(TO_FER2013):
        fer[unique & (col == c)] = cls
    return fer


def plausible(pred: np.ndarray, votes: np.ndarray, min_votes: int = PLAUSIBLE_VOTES) -> np.ndarray:
    """Bool ``[N]``: the predicted FER2013 class got at least ``min_votes`` annotator votes."""
    return votes[np.arange(len(pred)), TO_FER2013[pred]] >= min_votes


def targets(votes: np.ndarray, fer2013_labels: np.ndarray, fer2013_weight: float = 0.0,
            vote_target: str = "distribution") -> np.ndarray:
    """Soft targets ``[N, 7]`` from the votes, mixed with the FER2013 one-hot label by ``fer2013_weight``
    (0: votes only; 1: FER2013 only).

    vote_target: ``"distribution"``, the vote distribution (probability mode of Barsoum et al.); or
    ``"majority"``, the one-hot unique majority (the distribution where there is none). With the
    majority, the model learns w * P(FER2013 label) + (1 - w) * P(FER+ majority), whose top class
    maximises w * FER2013 accuracy + (1 - w) * FER+ accuracy: the target for one model judged on both.
    """
    if vote_target not in ("distribution", "majority"):
        raise ValueError(f"vote_target must be 'distribution' or 'majority', not {vote_target!r}")
    eye = np.eye(len(TO_FER2013), dtype=np.float32)
    votes_part = distribution(votes)
    if vote_target == "majority":
        maj = majority(votes)
        votes_part = np.where((maj >= 0)[:, None], eye[np.maximum(maj, 0)], votes_part)
    return (1.0 - fer2013_weight) * votes_part + fer2013_weight * eye[fer2013_labels]


def score(pred: np.ndarray, votes: np.ndarray) -> dict:
    """FER+ figures for predictions ``pred`` (FER2013 class ids) against ``votes`` [N, 10]:
    accuracy on the unique-majority rows (``n`` of them) and the share of all voted rows whose
    prediction at least PLAUSIBLE_VOTES annotators chose."""
    maj = majority(votes)
    keep = maj >= 0
    voted = votes[:, TO_FER2013].sum(1) > 0
    recall = {}
    for cls, name in enumerate(FER_LABELS):
        sel = keep & (maj == cls)
        recall[name] = round(float((pred[sel] == cls).mean()), 6) if sel.any() else None
    return {"n": int(keep.sum()), "accuracy": round(float((pred[keep] == maj[keep]).mean()), 6),
            "plausible": round(float(plausible(pred[voted], votes[voted]).mean()), 6),
            "per_class_recall": recall}


def score_predictions(votes: np.ndarray, float_probs, int8_probs, prior=None) -> dict:
    """``score`` of the float and int8 models' top classes (ties to ``prior``, as ``edge.int8.top_classes``
    breaks them); ``float_probs`` may be None (no float model), its entry is then None."""
    return {"float": None if float_probs is None else score(top_classes(float_probs, prior), votes),
            "int8": score(top_classes(int8_probs, prior), votes)}


def load_votes(data_path: str | Path, ferplus_path: str | Path) -> dict[str, np.ndarray]:
    """FER+ votes per split (``read_votes``), checked to line up with the FER2013 data at ``data_path``."""
    from convert.data import load_fer2013

    return read_votes(ferplus_path, {s: len(x) for s, (x, _) in load_fer2013(data_path).items()})
