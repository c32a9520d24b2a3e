"""A Keras functional model run layer by layer in PyTorch (NCHW), and its weights copied back.

Why: on the lent GPU machines (PyTorch/JAX, no TensorFlow) Keras' own JAX and torch backends ran
these depthwise-heavy 48x48 nets far too slowly (no epoch finished in 2 minutes), while the same graph
run layer by layer in eager PyTorch is fast. The Keras model stays the single definition of each
architecture: ``GraphExecutor`` walks its layers and runs them with TensorFlow's padding and
batch-norm semantics, so the weights copy back one to one, and ``verify_export`` checks that the
Keras model reproduces the torch outputs. Used by ``convert.trainer`` and ``convert.experiments``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from convert.data import TRAIN_MEAN, TRAIN_STD


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
        self.fake_quant = None  # optional callable(point_name, tensor) -> tensor (convert.experiments.qat)
        # conv name -> the BatchNormalization right after it (the converter folds it into the conv)
        users: dict[int, list[tuple[str, str]]] = {}
        for kind, name, ins, _, _ in self.steps:
            for i in ins:
                users.setdefault(i, []).append((kind, name))
        self.bn_after = {name: users[oid][0][1] for kind, name, _, oid, _ in self.steps
                         if kind in ("Conv2D", "SeparableConv2D") and [k for k, _ in users.get(oid, [])] == ["BatchNormalization"]}
        self.folded_bns = set(self.bn_after.values())
        self.steps_by_name = {name: layer for _, name, _, _, layer in self.steps}
        self.weight_quant = False  # convert.experiments.qat: fold BN and fake-quantize weights per channel, as the converter does

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
