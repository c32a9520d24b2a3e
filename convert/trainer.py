"""The PyTorch trainer: trains a registered Keras architecture (run by ``convert.torchnet``) and
saves ``best.keras``; on a GPU machine when one is lent, on the CPU otherwise.

What it adds over ``convert.train`` (the Keras trainer): soft targets (FER+ vote distributions,
``--ferplus``), online distillation from a float or int8 teacher, weight averaging, a wall-clock
budget that sizes the schedule, and it needs no TensorFlow (only ``torch`` and ``keras``, any backend).
Same outputs: best.keras, history.csv, curves.png, train.json, and a resumable ``checkpoint.pt``
written every epoch.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convert.data import TRAIN_MEAN, TRAIN_STD
from convert.recipes import Recipe
from convert.torchnet import GraphExecutor, verify_export


def augment(x, r: Recipe, gen: torch.Generator):
    """GPU batch augmentation in [-1, 1] units, the same operations as convert.train.build_augmenter."""
    n, dev = x.shape[0], x.device
    u = lambda lo, hi, *shape: torch.rand(*(shape or (n,)), device=dev, generator=gen) * (hi - lo) + lo  # noqa: E731
    ang = u(-r.rotation_deg, r.rotation_deg) * math.pi / 180
    scale = 1.0 / u(1 - r.zoom, 1 + r.zoom)
    flip = torch.where(u(0, 1) < 0.5, -1.0, 1.0) if r.flip else torch.ones(n, device=dev)
    tx, ty = u(-r.shift, r.shift) * 2, u(-r.shift, r.shift) * 2
    cos, sin = torch.cos(ang) * scale, torch.sin(ang) * scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if r.contrast:
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - m) * u(1 - r.contrast, 1 + r.contrast).view(n, 1, 1, 1) + m
    if r.brightness:
        x = x + (u(-r.brightness, r.brightness) * 2).view(n, 1, 1, 1)
    x = x.clamp(-1, 1)
    if r.erasing:
        h, w = x.shape[2], x.shape[3]
        area = u(0.02, 0.2) * h * w
        aspect = torch.exp(u(math.log(0.3), math.log(3.3)))
        eh = (area * aspect).sqrt().clamp(1, h)
        ew = (area / aspect).sqrt().clamp(1, w)
        y0 = u(0, 1) * (h - eh)
        x0 = u(0, 1) * (w - ew)
        yy = torch.arange(h, device=dev).view(1, h, 1)
        xx = torch.arange(w, device=dev).view(1, 1, w)
        box = (yy >= y0.view(n, 1, 1)) & (yy < (y0 + eh).view(n, 1, 1)) & (xx >= x0.view(n, 1, 1)) & (xx < (x0 + ew).view(n, 1, 1))
        box = box & (u(0, 1) < r.erasing).view(n, 1, 1)
        x = x.masked_fill(box.unsqueeze(1), 0.0)
    return x


def _lr_factor(step: int, warm: int, total: int) -> float:
    """Linear warm-up from 0.1 to 1, then cosine decay to 0.01 (as convert.train's CosineDecay)."""
    if warm and step < warm:
        return 0.1 + 0.9 * step / warm
    t = min(1.0, (step - warm) / max(1, total - warm))
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))


@torch.no_grad()
def evaluate(net, x_u8, y, batch=1024):
    """(accuracy, loss) of ``net`` on ``x_u8``. ``y``: int labels ``[N]``; or ``[N, 2]`` (FER2013 label,
    FER+ majority or -1) for joint selection, whose accuracy is the mean of the FER2013 accuracy on
    all rows and the FER+ accuracy on the rows with a majority (loss: against the FER2013 label)."""
    net.eval()
    joint = y.ndim == 2
    hits = torch.zeros(2, device=y.device)
    loss = 0.0
    for i in range(0, len(x_u8), batch):
        xb = (x_u8[i:i + batch].float() - TRAIN_MEAN) / TRAIN_STD
        logits = net(xb)
        yb = y[i:i + batch]
        first = yb[:, 0] if joint else yb
        loss += F.cross_entropy(logits, first, reduction="sum").item()
        pred = logits.argmax(1)
        hits[0] += (pred == first).sum()
        if joint:
            hits[1] += (pred == yb[:, 1]).sum()
    if not joint:
        return hits[0].item() / len(x_u8), loss / len(x_u8)
    acc = (hits[0].item() / len(x_u8) + hits[1].item() / max(1, int((y[:, 1] >= 0).sum()))) / 2
    return acc, loss / len(x_u8)


def train_torch(recipe: Recipe, x_train, y_train, x_val, y_val, out_dir, resume: bool = False, device="cuda",
                time_budget_s: float | None = None, recalibrate: bool = True) -> dict:
    """Train ``recipe`` in PyTorch on ``device``; same files and summary as convert.train.train.

    ``y_train``: int labels ``[N]``, or soft targets ``[N, 7]`` (rows sum to 1, e.g. FER+ vote
    distributions) trained with cross-entropy against the distribution. ``y_val``: int labels, or
    ``[N, 2]`` (FER2013 label, FER+ majority) to select on their mean accuracy (``evaluate``).
    ``time_budget_s``: wall-clock budget for training; after the first epoch the schedule is shrunk
    to the number of epochs that fit (at most ``recipe.epochs``), so the cosine still ends low.
    ``recalibrate``: write ``recalibrated.keras`` (batch norms re-estimated on clean ``x_train``).
    """
    import keras

    from convert.train import class_weight_for, initial_model, plot_history

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    torch.manual_seed(recipe.seed)
    keras.utils.set_random_seed(recipe.seed)
    torch.backends.cudnn.benchmark = True
    kmodel = initial_model(recipe)
    net = GraphExecutor(kmodel).to(device)
    teacher = load_teacher(recipe, device)
    decay = [p for k, p in net.params.items() if k.endswith(("__k", "__dk", "__pk"))]
    no_decay = [p for k, p in net.params.items() if not k.endswith(("__k", "__dk", "__pk"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr)
    xt = torch.tensor(x_train[:, None], device=device)
    soft = np.ndim(y_train) == 2
    yt = torch.tensor(y_train, device=device)
    hard = yt.argmax(1) if soft else yt
    xv = torch.tensor(x_val[:, None], device=device)
    yv = torch.tensor(y_val, device=device)
    steps = math.ceil(len(xt) / recipe.batch_size)
    epochs = recipe.epochs
    total, warm = epochs * steps, recipe.warmup_epochs * steps
    cw = None
    if recipe.class_weights:
        cw = torch.tensor(list(class_weight_for(hard.cpu().numpy()).values()), device=device)
    gen = torch.Generator(device=device)
    gen.manual_seed(recipe.seed)
    start, history, best, best_state, wall0 = 0, [], -1.0, None, 0.0
    ema = _clone_state(net) if recipe.ema else None
    if resume and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        net.load_state_dict(state["net"])
        if ema is not None and state.get("ema") is not None:  # a checkpoint from before ema was set starts it afresh
            ema = state["ema"]
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"].cpu() if hasattr(state["gen"], "cpu") else state["gen"])
        start, history, best, best_state, wall0 = (state["epoch"], state["history"], state["best"],
                                                   state["best_state"], state["wall"])
        epochs = state.get("epochs", epochs)
        total = epochs * steps
    t0 = time.time()
    patience_left = recipe.patience
    epoch = start
    while epoch < epochs:
        net.train()
        perm = torch.randperm(len(xt), device=device, generator=gen)
        tl, tc, te = 0.0, 0, time.time()
        for b in range(steps):
            idx = perm[b * recipe.batch_size:(b + 1) * recipe.batch_size]
            xb = augment((xt[idx].float() - TRAIN_MEAN) / TRAIN_STD, recipe, gen)
            for g in opt.param_groups:
                g["lr"] = recipe.lr * _lr_factor(epoch * steps + b, warm, total)
            logits = net(xb)
            if soft:  # the distribution is the target: no smoothing on top of the annotators' spread
                target = yt[idx] if cw is None else yt[idx] * cw
                loss = -(target * F.log_softmax(logits, 1)).sum(1).mean()
            else:
                loss = F.cross_entropy(logits, yt[idx], weight=cw, label_smoothing=recipe.label_smoothing)
            if teacher is not None:
                loss = (1.0 - recipe.distill) * loss + recipe.distill * distillation_loss(logits, teacher, xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                _update_ema(ema, net, recipe.ema)
            tl += loss.detach() * len(idx)
            tc += (logits.argmax(1) == hard[idx]).sum()
        va, vl = evaluate(net, xv, yv)
        row = {"epoch": epoch, "accuracy": float(tc) / len(xt), "loss": float(tl) / len(xt),
               "val_accuracy": va, "val_loss": vl}
        candidate = net.state_dict()
        if ema is not None:
            # the average is what gets selected and exported; the live weights' score is kept for the curves
            live = _clone_state(net)
            net.load_state_dict(ema)
            row["val_accuracy_live"] = va
            va, vl = row["val_accuracy"], row["val_loss"] = evaluate(net, xv, yv)
            candidate = ema
            net.load_state_dict(live)
        history.append(row)
        if va > best:
            best, patience_left = va, recipe.patience
            best_state = {k: v.detach().cpu().clone() for k, v in candidate.items()}
        else:
            patience_left -= 1
        if time_budget_s and epoch < start + 3:
            # the latest of the first three epochs prices one (the first pays for cuDNN autotuning); fit
            # the schedule to what is left of the budget, so the cosine still ends at a low rate
            fit = int((time_budget_s - (time.time() - t0)) / max(time.time() - te, 1e-3)) + epoch + 1
            epochs = max(epoch + 1, min(recipe.epochs, fit))
            total = epochs * steps
        print(f"epoch {epoch + 1}/{epochs} {time.time() - te:.1f}s loss {row['loss']:.4f} "
              f"acc {row['accuracy']:.4f} val_loss {vl:.4f} val_acc {va:.4f} best {best:.4f}", flush=True)
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "epoch": epoch + 1,
                    "ema": ema, "epochs": epochs,
                    "history": history, "best": best, "best_state": best_state,
                    "wall": wall0 + time.time() - t0}, out / "checkpoint.tmp.pt")
        (out / "checkpoint.tmp.pt").replace(ckpt)
        epoch += 1
        if patience_left <= 0:
            print("early stop: PublicTest accuracy stopped improving", flush=True)
            break
    with open(out / "history.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(history[0]))
        wr.writeheader()
        wr.writerows(history)
    net.load_state_dict(best_state)
    net.eval()
    kmodel = net.export_to_keras()
    diff = verify_export(net, kmodel, x_val[:256], device)
    kmodel.save(out / "best.keras")
    plot_history(out / "history.csv", out / "curves.png")
    best_row = max(history, key=lambda r: r["val_accuracy"])
    summary = {
        "recipe": recipe.to_dict(), "params": int(kmodel.count_params()),
        "train_images": int(len(x_train)), "val_images": int(len(x_val)), "val_split": "PublicTest",
        "targets": f"soft ({recipe.vote_target})" if soft else "labels", "epochs_planned": epochs,
        "epochs_run": len(history), "best_epoch": int(best_row["epoch"]) + 1,
        "best_val_accuracy": float(best_row["val_accuracy"]),
        "wall_seconds": round(wall0 + time.time() - t0, 1), "trainer": f"torch {torch.__version__} on {device}",
        "export_max_abs_diff": diff,
    }
    (out / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    if recalibrate:
        from convert.batchnorm import write_recalibrated

        write_recalibrated(out / "best.keras", x_train, out / "recalibrated.keras")
    return summary


def _clone_state(net) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@torch.no_grad()
def _update_ema(ema: dict, net, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * current, for weights and batch-norm statistics alike."""
    for k, v in net.state_dict().items():
        ema[k].lerp_(v.detach(), 1.0 - decay)


def load_teacher(recipe: Recipe, device):
    """The recipe's teacher as a callable: augmented batch ([-1, 1], NCHW) -> class scores; None
    when the recipe does not distil.

    recipe.teacher is a float ``.keras`` (run in torch) or an int8 ``.tflite`` with its manifest
    beside it (run by the TFLite interpreter, one image at a time). On a 2-core CPU the int8
    ``standard`` scores a batch of 128 in ~0.1 s where its float graph in torch takes ~1.2 s.
    """
    if not (recipe.teacher and recipe.distill):
        return None
    from convert.train import teacher_file

    path = teacher_file(recipe.teacher)
    if path.suffix == ".tflite":
        return _tflite_teacher(path)
    import keras

    net = GraphExecutor(keras.models.load_model(path, compile=False)).to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return lambda xb: torch.softmax(net(xb), 1)


def _tflite_teacher(path: Path):
    from convert.drift import open_int8, score_int8
    from edge.int8 import quantize_input
    from edge.manifest import load_manifest

    manifest = load_manifest(path)
    model = open_int8(path, threads=torch.get_num_threads())
    inp = model[1]

    def scores(xb):
        pixels = xb.detach().cpu().numpy()[:, 0] * TRAIN_STD + TRAIN_MEAN  # back to the 0..255 pixel scale
        xq = quantize_input(pixels, manifest.input.mean, manifest.input.std, *inp["quantization"], inp["dtype"])
        return torch.tensor(score_int8(model, xq[..., None], path), device=xb.device)

    return scores


def distillation_loss(logits, teacher, xb):
    """Cross-entropy against the teacher's scores on the same augmented batch (online distillation:
    the soft target matches the crop, flip and erase the student sees, unlike cached scores)."""
    with torch.no_grad():
        soft = teacher(xb)
    return -(soft * F.log_softmax(logits, 1)).sum(1).mean()


def ferplus_training_arrays(data_path, ferplus_path, fer2013_weight: float = 0.0,
                            vote_target: str = "distribution", select: str = "ferplus"):
    """Training images with FER+ soft targets (``convert.ferplus.targets``; faces FER+ calls
    not-a-face, or without votes on the seven classes, dropped), and the PublicTest validation set:
    the faces with a unique FER+ majority and that label (``select="ferplus"``), or every face with
    ``[FER2013 label, FER+ majority or -1]`` (``select="joint"``)."""
    from convert import ferplus
    from convert.data import load_split
    from edge.errors import DataError

    if not ferplus_path:
        raise DataError("this recipe trains on FER+ votes; pass --ferplus PATH/fer2013new.csv")
    if select not in ("ferplus", "joint"):
        raise DataError(f"recipe select must be 'ferplus' or 'joint', not {select!r}")
    votes = ferplus.load_votes(data_path, ferplus_path)
    xt, yt = load_split(data_path, "Training")
    vt = votes["Training"]
    keep = ferplus.trainable(vt)
    xv, yv = load_split(data_path, "PublicTest")
    maj = ferplus.majority(votes["PublicTest"])
    soft = ferplus.targets(vt[keep], yt[keep], fer2013_weight, vote_target)
    if select == "joint":
        return xt[keep], soft, xv, np.stack([yv, maj], 1)
    return xt[keep], soft, xv[maj >= 0], maj[maj >= 0]


def recipe_arrays(recipe: Recipe, data_path, ferplus_path=None):
    """(x_train, y_train, x_val, y_val) for ``recipe``: FER+ targets (``ferplus_training_arrays``)
    or the FER2013 Training and PublicTest labels."""
    from convert.data import load_split

    if recipe.targets == "ferplus":
        return ferplus_training_arrays(data_path, ferplus_path, recipe.fer2013_weight, recipe.vote_target,
                                       recipe.select)
    return (*load_split(data_path, "Training"), *load_split(data_path, "PublicTest"))


def main(argv=None) -> int:
    import argparse

    from convert.recipes import get_recipe

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--recipe", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--limit", type=int)
    p.add_argument("--ferplus", help="fer2013new.csv (FER+ votes): needed by recipes with targets = 'ferplus'")
    p.add_argument("--time-budget", type=float, help="seconds of training; the schedule shrinks to fit")
    p.add_argument("--no-recalibrate", action="store_true", help="skip recalibrated.keras (do it later)")
    p.add_argument("--fer2013-weight", type=float, help="ferplus recipes: override the FER2013 label's weight")
    p.add_argument("--vote-target", choices=("distribution", "majority"), help="ferplus recipes: override the vote target")
    a = p.parse_args(argv)
    recipe = get_recipe(a.recipe, epochs=a.epochs, fer2013_weight=a.fer2013_weight, vote_target=a.vote_target)
    xt, yt, xv, yv = recipe_arrays(recipe, a.data, a.ferplus)
    if a.limit:
        xt, yt, xv, yv = xt[:a.limit], yt[:a.limit], xv[:a.limit], yv[:a.limit]
    s = train_torch(recipe, xt, yt, xv, yv, a.out, resume=a.resume, device=a.device,
                    time_budget_s=a.time_budget, recalibrate=not a.no_recalibrate)
    print(json.dumps(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
