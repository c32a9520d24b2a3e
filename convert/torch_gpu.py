"""Optional CUDA trainer: trains a registered Keras architecture with plain PyTorch, then writes
the trained weights back into the Keras model and saves ``best.keras``.

Why it exists: on the lent GPU machines (PyTorch/JAX, no TensorFlow) Keras' own JAX and torch
backends ran these depthwise-heavy 48x48 nets far too slowly (no epoch finished in 2 minutes),
while the same graph run layer by layer in eager PyTorch is fast. The Keras model stays the single
definition of each architecture: ``GraphExecutor`` walks its layers and runs them in torch with
TensorFlow's padding and batch-norm semantics, so the weights copy back one to one, and
``verify_export`` checks the Keras model reproduces the torch outputs.

Same outputs as ``convert.train.train`` (best.keras, history.csv, curves.png, train.json, and a
resumable ``checkpoint.pt`` written every epoch). Needs ``torch`` and ``keras`` (any backend).
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


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (extra pixel at the end), which differs from torch's symmetric padding."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _pad_same(x, k: int, s: int, value: float = 0.0):
    ph = _same_pad(x.shape[2], k, s)
    pw = _same_pad(x.shape[3], k, s)
    if ph == (0, 0) and pw == (0, 0):
        return x
    return F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=value)


def _fake_quant_per_channel(kernel):
    """Symmetric int8 fake quantization of a conv kernel per output channel (dim 0), straight-through."""
    scale = kernel.detach().abs().amax(dim=tuple(range(1, kernel.dim()))).clamp(min=1e-8) / 127.0
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(kernel, scale, zero, 0, -127, 127)


class GraphExecutor(torch.nn.Module):
    """Runs a Keras functional model's layers in PyTorch (NCHW). Returns logits (the final Softmax is skipped)."""

    def __init__(self, kmodel):
        super().__init__()
        self.__dict__["kmodel"] = kmodel  # not a submodule: under Keras' torch backend it is a Module itself
        self.steps = []  # (kind, layer name, input tensor ids, output tensor id, config)
        self.params = torch.nn.ParameterDict()
        self.buffers_ = {}
        for layer in kmodel.layers:
            kind = type(layer).__name__
            if kind == "InputLayer":
                continue
            ins = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
            step = (kind, layer.name, [id(t) for t in ins], id(layer.output), layer)
            w = [np.asarray(v) for v in layer.get_weights()]
            name = layer.name
            if kind == "Conv2D":
                if layer.get_config()["activation"] != "linear":
                    raise ValueError(f"{name}: fused activations are not supported by the torch trainer")
                self.params[f"{name}__k"] = torch.nn.Parameter(torch.tensor(w[0]).permute(3, 2, 0, 1).contiguous())
                if layer.use_bias:
                    self.params[f"{name}__b"] = torch.nn.Parameter(torch.tensor(w[1]))
            elif kind == "SeparableConv2D":
                self.params[f"{name}__dk"] = torch.nn.Parameter(torch.tensor(w[0]).permute(2, 3, 0, 1).contiguous())
                self.params[f"{name}__pk"] = torch.nn.Parameter(torch.tensor(w[1]).permute(3, 2, 0, 1).contiguous())
                if layer.use_bias:
                    self.params[f"{name}__b"] = torch.nn.Parameter(torch.tensor(w[2]))
            elif kind == "BatchNormalization":
                self.params[f"{name}__g"] = torch.nn.Parameter(torch.tensor(w[0]))
                self.params[f"{name}__be"] = torch.nn.Parameter(torch.tensor(w[1]))
                self.register_buffer(f"{name}__m", torch.tensor(w[2]))
                self.register_buffer(f"{name}__v", torch.tensor(w[3]))
            elif kind == "Dense":
                self.params[f"{name}__k"] = torch.nn.Parameter(torch.tensor(w[0]).t().contiguous())
                self.params[f"{name}__b"] = torch.nn.Parameter(torch.tensor(w[1]))
            elif kind not in ("ReLU", "MaxPooling2D", "Add", "GlobalAveragePooling2D", "Dropout", "Softmax"):
                raise ValueError(f"layer {name} ({kind}) is not supported by the torch trainer")
            self.steps.append(step)
        self.input_id = id(kmodel.inputs[0])
        self.output_id = id(kmodel.outputs[0])
        self.quant_points = self._int8_tensor_boundaries()
        self.fake_quant = None  # optional callable(point_name, tensor) -> tensor (convert.qat)
        # conv name -> the BatchNormalization right after it (the converter folds it into the conv)
        users: dict[int, list[tuple[str, str]]] = {}
        for kind, name, ins, _, _ in self.steps:
            for i in ins:
                users.setdefault(i, []).append((kind, name))
        self.bn_after = {name: users[oid][0][1] for kind, name, _, oid, _ in self.steps
                         if kind in ("Conv2D", "SeparableConv2D") and [k for k, _ in users.get(oid, [])] == ["BatchNormalization"]}
        self.folded_bns = set(self.bn_after.values())
        self.steps_by_name = {name: layer for _, name, _, _, layer in self.steps}
        self.weight_quant = False  # convert.qat: fold BN and fake-quantize weights per channel, as the converter does

    def _int8_tensor_boundaries(self) -> set[str]:
        """Names of the steps whose output is a separate int8 tensor after TFLite conversion.

        The converter fuses Conv/Dense + BatchNorm + ReLU into one op, so a tensor is quantized only
        where no BN/ReLU follows; a SeparableConv2D's depthwise output is its own tensor
        (``<name>/depthwise``); MaxPool keeps its input's scale; Softmax has a fixed scale.
        """
        consumers: dict[int, list[str]] = {}
        for kind, _, ins, _, _ in self.steps:
            for i in ins:
                consumers.setdefault(i, []).append(kind)
        points = set()
        for kind, name, _, oid, _ in self.steps:
            if kind == "SeparableConv2D":
                points.add(f"{name}/depthwise")
            if kind in ("MaxPooling2D", "Softmax", "Dropout"):
                continue
            nxt = consumers.get(oid, [])
            fused = (kind in ("Conv2D", "SeparableConv2D", "Dense") and nxt == ["BatchNormalization"]) or \
                    (kind in ("Conv2D", "SeparableConv2D", "Dense", "BatchNormalization") and nxt == ["ReLU"])
            if not fused:
                points.add(name)
        return points

    def _folded(self, name, kernel, bias):
        """``kernel``/``bias`` with the following BN folded in and the kernel fake-quantized to int8
        per output channel (symmetric, as TFLite's converter quantizes conv weights)."""
        bn = self.bn_after.get(name)
        if bn is not None:
            scale = self.params[f"{bn}__g"] / torch.sqrt(getattr(self, f"{bn}__v") + self.steps_by_name[bn].epsilon)
            kernel = kernel * scale.view(-1, 1, 1, 1)
            bias = self.params[f"{bn}__be"] + ((bias if bias is not None else 0.0) - getattr(self, f"{bn}__m")) * scale
        return _fake_quant_per_channel(kernel), bias

    def forward(self, x):
        env = {self.input_id: x}
        fold = self.weight_quant
        P = self.params
        out = None
        for kind, name, ins, oid, layer in self.steps:
            a = [env[i] for i in ins]
            x = a[0]
            if kind == "Conv2D":
                k, b = P[f"{name}__k"], P[f"{name}__b"] if layer.use_bias else None
                if fold:
                    k, b = self._folded(name, k, b)
                s = layer.strides[0]
                x = F.conv2d(_pad_same(x, k.shape[-1], s), k, b, stride=s)
            elif kind == "SeparableConv2D":
                dk = _fake_quant_per_channel(P[f"{name}__dk"]) if fold else P[f"{name}__dk"]
                s = layer.strides[0]
                x = F.conv2d(_pad_same(x, dk.shape[-1], s), dk, None, stride=s, groups=dk.shape[0])
                if self.fake_quant is not None:
                    x = self.fake_quant(f"{name}/depthwise", x)
                pk, b = P[f"{name}__pk"], P[f"{name}__b"] if layer.use_bias else None
                if fold:
                    pk, b = self._folded(name, pk, b)
                x = F.conv2d(x, pk, b)
            elif kind == "BatchNormalization" and fold and name in self.folded_bns:
                pass  # already folded into the convolution before it
            elif kind == "BatchNormalization":
                x = F.batch_norm(x, getattr(self, f"{name}__m"), getattr(self, f"{name}__v"), P[f"{name}__g"],
                                 P[f"{name}__be"], training=self.training, momentum=1.0 - layer.momentum,
                                 eps=layer.epsilon)
            elif kind == "ReLU":
                x = F.relu(x)
            elif kind == "MaxPooling2D":
                k, s = layer.pool_size[0], layer.strides[0]
                x = F.max_pool2d(_pad_same(x, k, s, value=float("-inf")), k, s)
            elif kind == "Add":
                x = a[0] + a[1]
                for extra in a[2:]:
                    x = x + extra
            elif kind == "GlobalAveragePooling2D":
                x = x.mean(dim=(2, 3))
            elif kind == "Dropout":
                x = F.dropout(x, layer.rate, self.training)
            elif kind == "Dense":
                x = F.linear(x, P[f"{name}__k"], P[f"{name}__b"])
            elif kind == "Softmax":
                pass  # logits out; softmax lives in the loss
            if self.fake_quant is not None and name in self.quant_points:
                x = self.fake_quant(name, x)
            env[oid] = x
            out = x
        return env.get(self.output_id, out)

    def export_to_keras(self):
        """Copy the trained torch weights back into the Keras model (in place) and return it."""
        P = self.params
        for kind, name, _, _, layer in self.steps:
            g = lambda key: P[f"{name}__{key}"].detach().cpu().numpy()  # noqa: E731
            if kind == "Conv2D":
                w = [g("k").transpose(2, 3, 1, 0)] + ([g("b")] if layer.use_bias else [])
            elif kind == "SeparableConv2D":
                w = [g("dk").transpose(2, 3, 0, 1), g("pk").transpose(2, 3, 1, 0)] + ([g("b")] if layer.use_bias else [])
            elif kind == "BatchNormalization":
                w = [g("g"), g("be"), getattr(self, f"{name}__m").cpu().numpy(), getattr(self, f"{name}__v").cpu().numpy()]
            elif kind == "Dense":
                w = [g("k").T, g("b")]
            else:
                continue
            layer.set_weights(w)
        return self.kmodel


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
    net.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(x_u8), batch):
        xb = (x_u8[i:i + batch].float() - TRAIN_MEAN) / TRAIN_STD
        logits = net(xb)
        loss += F.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
        correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x_u8), loss / len(x_u8)


def train_torch(recipe: Recipe, x_train, y_train, x_val, y_val, out_dir, resume: bool = False, device="cuda") -> dict:
    """Train ``recipe`` in PyTorch on ``device``; same files and summary as convert.train.train."""
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
    yt = torch.tensor(y_train, device=device)
    xv = torch.tensor(x_val[:, None], device=device)
    yv = torch.tensor(y_val, device=device)
    steps = math.ceil(len(xt) / recipe.batch_size)
    total, warm = recipe.epochs * steps, recipe.warmup_epochs * steps
    cw = torch.tensor(list(class_weight_for(y_train).values()), device=device) if recipe.class_weights else None
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
    t0 = time.time()
    patience_left = recipe.patience
    for epoch in range(start, recipe.epochs):
        net.train()
        perm = torch.randperm(len(xt), device=device, generator=gen)
        tl, tc, te = 0.0, 0, time.time()
        for b in range(steps):
            idx = perm[b * recipe.batch_size:(b + 1) * recipe.batch_size]
            xb = augment((xt[idx].float() - TRAIN_MEAN) / TRAIN_STD, recipe, gen)
            for g in opt.param_groups:
                g["lr"] = recipe.lr * _lr_factor(epoch * steps + b, warm, total)
            logits = net(xb)
            loss = F.cross_entropy(logits, yt[idx], weight=cw, label_smoothing=recipe.label_smoothing)
            if teacher is not None:
                loss = (1.0 - recipe.distill) * loss + recipe.distill * distillation_loss(logits, teacher, xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                _update_ema(ema, net, recipe.ema)
            tl += loss.detach() * len(idx)
            tc += (logits.argmax(1) == yt[idx]).sum()
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
        print(f"epoch {epoch + 1}/{recipe.epochs} {time.time() - te:.1f}s loss {row['loss']:.4f} "
              f"acc {row['accuracy']:.4f} val_loss {vl:.4f} val_acc {va:.4f} best {best:.4f}", flush=True)
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "epoch": epoch + 1,
                    "ema": ema,
                    "history": history, "best": best, "best_state": best_state,
                    "wall": wall0 + time.time() - t0}, out / "checkpoint.tmp.pt")
        (out / "checkpoint.tmp.pt").replace(ckpt)
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
        "epochs_run": len(history), "best_epoch": int(best_row["epoch"]) + 1,
        "best_val_accuracy": float(best_row["val_accuracy"]),
        "wall_seconds": round(wall0 + time.time() - t0, 1), "trainer": f"torch {torch.__version__} on {device}",
        "export_max_abs_diff": diff,
    }
    (out / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
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
    from convert.drift import open_int8, quantize_input, score_int8
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


@torch.no_grad()
def verify_export(net, kmodel, x_u8, device) -> float:
    """Largest |softmax(torch) - keras| over a batch: the export must reproduce the trained net.

    TF32 is switched off for the check: with it on, cuDNN's conv algorithms alone differ by ~3e-3.
    """
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    xf = (x_u8.astype(np.float32) - TRAIN_MEAN) / TRAIN_STD
    p_torch = torch.softmax(net(torch.tensor(xf[:, None], device=device)), 1).cpu().numpy()
    import keras

    p_keras = keras.ops.convert_to_numpy(kmodel(xf[..., None], training=False))
    diff = float(np.abs(p_torch - p_keras).max())
    if diff > 1e-3:
        raise RuntimeError(f"exported Keras model differs from the trained torch net (max |dp| = {diff:.2e})")
    return diff


def main(argv=None) -> int:
    import argparse

    from convert.data import load_split
    from convert.recipes import get_recipe

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--recipe", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--limit", type=int)
    a = p.parse_args(argv)
    recipe = get_recipe(a.recipe, epochs=a.epochs)
    xt, yt = load_split(a.data, "Training")
    xv, yv = load_split(a.data, "PublicTest")
    if a.limit:
        xt, yt, xv, yv = xt[:a.limit], yt[:a.limit], xv[:a.limit], yv[:a.limit]
    s = train_torch(recipe, xt, yt, xv, yv, a.out, resume=a.resume, device=a.device)
    print(json.dumps(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
