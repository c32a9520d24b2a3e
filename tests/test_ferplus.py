"""FER+ votes: parsing, the unique-majority label, soft targets, scoring, and training on them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convert import ferplus
from edge.errors import DataError

HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
# columns:       neu hap sur sad ang dis fea con unk NF
ROWS = [("Training", [6, 0, 1, 1, 0, 0, 0, 0, 2, 0]),    # neutral majority
        ("Training", [0, 4, 4, 0, 0, 0, 0, 0, 2, 0]),    # happy/surprise tie: no majority
        ("Training", [0, 0, 0, 0, 0, 0, 0, 0, 2, 8]),    # not a face
        ("PublicTest", [0, 0, 0, 0, 7, 1, 0, 2, 0, 0]),  # angry
        ("PrivateTest", [1, 0, 0, 0, 0, 0, 0, 6, 3, 0]),  # contempt majority: not one of the seven
        ("PrivateTest", [0, 0, 0, 2, 0, 0, 8, 0, 0, 0])]  # fear


def write_votes(path, rows=ROWS, header=HEADER):
    lines = [header] + [f"{u},fer{i:07d}.png," + ",".join(map(str, v)) + "\n" for i, (u, v) in enumerate(rows)]
    path.write_text("".join(lines))
    return path


def test_votes_majority_distribution_and_trainable(tmp_path):
    votes = ferplus.read_votes(write_votes(tmp_path / "fer2013new.csv"),
                               {"Training": 3, "PublicTest": 1, "PrivateTest": 2})
    assert [len(votes[s]) for s in ("Training", "PublicTest", "PrivateTest")] == [3, 1, 2]
    # FER2013 ids: angry 0, disgust 1, fear 2, happy 3, sad 4, surprise 5, neutral 6
    assert ferplus.majority(votes["Training"]).tolist() == [6, -1, -1]
    assert ferplus.majority(votes["PublicTest"]).tolist() == [0]
    assert ferplus.majority(votes["PrivateTest"]).tolist() == [-1, 2]
    dist = ferplus.distribution(votes["Training"])
    np.testing.assert_allclose(dist[0], [0, 0, 0, 0, 1 / 8, 1 / 8, 6 / 8])  # unknown dropped, renormalised
    assert dist[2].sum() == 0  # nothing on the seven classes
    assert ferplus.trainable(votes["Training"]).tolist() == [True, True, False]


def test_targets_mix_the_fer2013_label():
    votes = np.array([[6, 0, 1, 1, 0, 0, 0, 0, 2, 0]])
    t = ferplus.targets(votes, np.array([4]), fer2013_weight=0.25)
    np.testing.assert_allclose(t[0], [0, 0, 0, 0, 0.75 / 8 + 0.25, 0.75 / 8, 0.75 * 6 / 8])
    assert t.sum() == pytest.approx(1.0)


def test_majority_targets_learn_the_sum_of_both_accuracies():
    """vote_target="majority": half the FER2013 label, half the one-hot FER+ majority; the distribution
    stands in where the votes tie."""
    votes = np.array([[6, 0, 1, 1, 0, 0, 0, 0, 2, 0],    # neutral majority
                      [0, 4, 4, 0, 0, 0, 0, 0, 2, 0]])   # happy/surprise tie
    t = ferplus.targets(votes, np.array([4, 3]), fer2013_weight=0.5, vote_target="majority")
    np.testing.assert_allclose(t[0], [0, 0, 0, 0, 0.5, 0, 0.5])
    np.testing.assert_allclose(t[1], [0, 0, 0, 0.5 + 0.25, 0, 0.25, 0])
    with pytest.raises(ValueError, match="vote_target"):
        ferplus.targets(votes, np.array([4, 3]), vote_target="mode")


def test_score_counts_majority_rows_and_plausible_votes():
    votes = np.array([[6, 0, 0, 4, 0, 0, 0, 0, 0, 0],    # neutral
                      [0, 0, 0, 0, 7, 3, 0, 0, 0, 0],    # angry
                      [0, 5, 5, 0, 0, 0, 0, 0, 0, 0]])   # tie: not in the accuracy
    pred = np.array([4, 1, 5])  # sad (4 votes: plausible, wrong), disgust (3 votes), surprise (5 votes)
    s = ferplus.score(pred, votes)
    assert s["n"] == 2 and s["accuracy"] == 0.0 and s["plausible"] == 1.0
    s = ferplus.score(np.array([6, 0, 0]), votes)
    assert s["accuracy"] == 1.0 and s["plausible"] == pytest.approx(2 / 3)
    assert s["per_class_recall"]["neutral"] == 1.0 and s["per_class_recall"]["fear"] is None


@pytest.mark.parametrize("sizes, words", [({"Training": 4, "PublicTest": 1, "PrivateTest": 2}, "do not match"),
                                          ({"PublicTest": 1, "Training": 3, "PrivateTest": 2}, "do not match")])
def test_votes_that_do_not_line_up_are_refused(tmp_path, sizes, words):
    with pytest.raises(DataError, match=words):
        ferplus.read_votes(write_votes(tmp_path / "v.csv"), sizes)


def test_bad_files_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="--ferplus"):
        ferplus.read_votes(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="header"):
        ferplus.read_votes(write_votes(tmp_path / "h.csv", header="a,b,c\n"))
    interleaved = ROWS[:1] + ROWS[3:4] + ROWS[1:2]
    with pytest.raises(DataError, match="resume"):
        ferplus.read_votes(write_votes(tmp_path / "i.csv", rows=interleaved))
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "Training,fer0000000.png,1,2,x,0,0,0,0,0,0,0\n")
    with pytest.raises(DataError, match=r"bad.csv:2: vote counts"):
        ferplus.read_votes(bad)


def write_fer_csv(path, labels=(6, 3, 2, 0, 1, 2)):
    rng = np.random.default_rng(0)
    path.write_text("emotion,pixels,Usage\n" + "".join(
        f"{lab},{' '.join(map(str, rng.integers(0, 256, 48 * 48)))},{u}\n" for lab, (u, _) in zip(labels, ROWS)))
    return path


def test_training_arrays_from_a_fer2013_csv(tmp_path):
    """FER2013 CSV + FER+ votes -> soft targets for trainable Training rows, majority-labelled PublicTest."""
    pytest.importorskip("torch")
    from convert.trainer import ferplus_training_arrays

    csv = write_fer_csv(tmp_path / "fer2013.csv")
    xt, yt, xv, yv = ferplus_training_arrays(csv, write_votes(tmp_path / "v.csv"), fer2013_weight=0.5)
    assert xt.shape == (2, 48, 48) and yt.shape == (2, 7)  # the not-a-face row is dropped
    np.testing.assert_allclose(yt.sum(1), 1.0, rtol=1e-6)
    assert yt[1, 3] == pytest.approx(0.5 + 0.5 * 0.5)  # happy: half the FER2013 label, half of the votes
    assert xv.shape == (1, 48, 48) and yv.tolist() == [0]
    with pytest.raises(DataError, match="--ferplus"):
        ferplus_training_arrays(csv, None)
    # joint selection validates on every PublicTest face with both labels
    _, _, xv, yv = ferplus_training_arrays(csv, write_votes(tmp_path / "v.csv"), 0.5, "majority", "joint")
    assert xv.shape == (1, 48, 48) and yv.tolist() == [[0, 0]]


def test_joint_evaluation_averages_fer2013_and_ferplus_accuracy():
    """evaluate() on [FER2013 label, FER+ majority] pairs: the mean of the two accuracies, FER+ counted
    only where a majority exists."""
    torch = pytest.importorskip("torch")
    from convert.trainer import evaluate

    class Fixed(torch.nn.Module):  # predicts class i % 7 for row i, whatever the image
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.arange(len(x)) % 7, 7).float()

    x = torch.zeros(4, 1, 48, 48, dtype=torch.uint8)
    y = torch.tensor([[0, 0], [1, 5], [9, -1], [9, 3]])  # predictions 0, 1, 2, 3
    acc, _ = evaluate(Fixed(), x, y.clamp(max=6))
    # FER2013: rows 0, 1 right of 4 -> 0.5; FER+: rows 0 and 3 right of 3 with a majority -> 2/3
    assert acc == pytest.approx((0.5 + 2 / 3) / 2)
    plain, _ = evaluate(Fixed(), x, y[:, 0].clamp(max=6))
    assert plain == pytest.approx(0.5)


def test_trainer_learns_from_soft_targets(tmp_path):
    """Soft targets train end to end; a spent budget ends training after the first epoch; the export matches."""
    pytest.importorskip("torch")
    from convert.recipes import get_recipe
    from convert.trainer import train_torch

    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (64, 48, 48), dtype=np.uint8)
    soft = rng.dirichlet(np.ones(7), 64).astype(np.float32)
    recipe = get_recipe("smoke", epochs=50, batch_size=32)
    s = train_torch(recipe, x, soft, x[:32], soft[:32].argmax(1), tmp_path, device="cpu", time_budget_s=1e-3,
                    recalibrate=False)
    assert s["targets"].startswith("soft") and s["epochs_planned"] == 1 and s["epochs_run"] == 1
    assert s["export_max_abs_diff"] < 1e-3 and (tmp_path / "best.keras").is_file()


def test_fer_edge_train_runs_ferplus_recipes_with_the_torch_trainer(tmp_path):
    """`fer-edge train --recipe tiny_ferplus --ferplus ...` trains on votes; without --ferplus it says what to pass."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("torch")
    root = Path(__file__).resolve().parents[1]
    csv, votes = write_fer_csv(tmp_path / "fer2013.csv"), write_votes(tmp_path / "v.csv")
    cmd = [sys.executable, "-m", "fer_edge", "train", "--recipe", "tiny_ferplus", "--data", str(csv)]
    bad = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env={**__import__("os").environ,
                         "FER_EDGE_CACHE": str(tmp_path / "cache")})
    assert bad.returncode != 0 and "--ferplus" in bad.stderr.strip().splitlines()[-1]
    ok = subprocess.run(cmd + ["--ferplus", str(votes), "--epochs", "1", "--out", str(tmp_path / "run")],
                        capture_output=True, text=True, cwd=root,
                        env={**__import__("os").environ, "FER_EDGE_CACHE": str(tmp_path / "cache")})
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "best FER+ PublicTest accuracy" in ok.stdout
    assert (tmp_path / "run" / "recalibrated.keras").is_file()


def test_bench_accuracy_reports_ferplus_beside_fer2013(tmp_path):
    """`bench accuracy --ferplus`: the shipped tiny on a small CSV gets FER+ columns from the same predictions."""
    from bench.accuracy import format_accuracy, run_accuracy
    from convert.drift import predict_int8
    from convert.data import load_split
    from edge.int8 import top_classes
    from edge.manifest import MODELS_DIR, load_manifest

    csv, votes = write_fer_csv(tmp_path / "fer2013.csv"), write_votes(tmp_path / "v.csv")
    result = run_accuracy(csv, ["tiny"], split="PrivateTest", with_fer=False, ferplus=votes)
    row = result["rows"][0]
    assert row["ferplus_n"] == 1  # of the two PrivateTest faces only one has a seven-class majority (fear)
    man = load_manifest(MODELS_DIR / "tiny.tflite")
    x, _ = load_split(csv, "PrivateTest")
    pred = top_classes(predict_int8(MODELS_DIR / "tiny.tflite", x, man.input.mean, man.input.std), man.class_prior)
    assert row["ferplus_int8_accuracy"] == float(pred[1] == 2)
    assert "FER+ int8" in format_accuracy(result)


def test_frontier_scores_a_model_on_both_label_sets(tmp_path):
    """convert.experiments.frontier: the shipped int8 tiny on a PublicTest fixture, scored against the
    FER2013 label and the FER+ majority, with its table and plot written."""
    from pathlib import Path

    from convert.data import load_split
    from convert.experiments import frontier

    csv, votes = write_fer_csv(tmp_path / "fer2013.csv"), write_votes(tmp_path / "v.csv")
    model = Path(__file__).resolve().parents[1] / "edge" / "models" / "tiny.tflite"
    assert frontier.main(["--data", str(csv), "--ferplus", str(votes), "--model", f"tiny:shipped={model}",
                          "--out", str(tmp_path / "out")]) == 0
    rows = json.loads((tmp_path / "out" / "frontier.json").read_text())
    # the one PublicTest face is angry (0) for FER2013 and for the FER+ majority alike
    hit = 100.0 * float(frontier.predict(model, load_split(csv, "PublicTest")[0])[0] == 0)
    assert rows[0]["group"] == "tiny" and rows[0]["kind"] == "int8"
    assert rows[0]["fer2013"] == rows[0]["ferplus"] == rows[0]["agree"] == hit
    # no face where the two labels differ: an empty group, not NaN
    assert rows[0]["differ_ferplus"] is None and rows[0]["differ_fer2013"] is None
    assert "| tiny:shipped | int8 |" in (tmp_path / "out" / "frontier.md").read_text()
    assert "| - / - |" in (tmp_path / "out" / "frontier.md").read_text()
    assert (tmp_path / "out" / "frontier.png").stat().st_size > 10_000


def test_frontier_without_a_fer_plus_majority_is_a_one_line_error(tmp_path, capsys):
    """No PublicTest face with a unique FER+ majority (here a tie): exit 2, one line naming --ferplus, nothing
    written; a --model that is not NAME=PATH is refused the same way."""
    from convert.experiments import frontier

    csv = write_fer_csv(tmp_path / "fer2013.csv")
    rows = [r if r[0] != "PublicTest" else ("PublicTest", [0, 4, 4, 0, 0, 0, 0, 0, 2, 0]) for r in ROWS]
    votes = write_votes(tmp_path / "v.csv", rows)
    out = tmp_path / "out"
    assert frontier.main(["--data", str(csv), "--ferplus", str(votes), "--model", "tiny:x=none.tflite",
                          "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unique FER+ majority" in err and "--ferplus" in err
    assert not (out / "frontier.json").exists()
    assert frontier.main(["--data", str(csv), "--ferplus", str(votes), "--model", "no-equals-sign"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
