"""BlazeFace (MediaPipe's face detection TFLite models) decoded in numpy: anchors, boxes, keypoints,
weighted NMS, and one model run on a whole frame (letterboxed into its square input, or with the input
resized to a scaled copy of the frame). ``edge.detect`` builds the detectors from these parts.

The int8 short-range model (``fer-edge convert-detector``, convert/detector.py) has int8 input and four
int8 outputs, the detection heads (scores and regressors at strides 8 and 16), flattened here; it ships once
per input shape the ``auto`` preset uses at 640x480 (``<name>_<h>x<w>.tflite``: the Edge TPU needs static
shapes), and other shapes resize the 128x128 file on the CPU.

OpenCV is imported by the functions that use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import ModelError
from edge.int8 import dequantize, invoke, make_interpreter, quantize_input
from edge.manifest import MODELS_DIR


@dataclass(frozen=True)
class BlazeFaceSpec:
    """Model file and the MediaPipe graph options it needs (face_detection_*_common.pbtxt)."""

    filename: str
    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    min_score_thresh: float  # the graph's own threshold, combined with cfg.min_score
    aspect_ratios: tuple[float, ...] = (1.0,)
    anchor_offset: float = 0.5
    score_clipping_thresh: float = 100.0
    min_suppression_threshold: float = 0.3
    int8: bool = False  # full-integer model: int8 input, int8 heads as outputs; may run on the Edge TPU


BLAZEFACE_SPECS = {
    "blazeface_full": BlazeFaceSpec("face_detection_full_range.tflite", 192, (4,), 0.0, 0.6),
    "blazeface_short": BlazeFaceSpec("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 1.0, 0.5),
    # The same model converted to full-integer int8 (convert/detector.py; edge/models/PROVENANCE.md).
    "blazeface_short_int8": BlazeFaceSpec("face_detection_short_range_int8.tflite", 128, (8, 16, 16, 16), 1.0, 0.5,
                                          int8=True),
    # The back-camera model (face_detection_back_desktop_live.pbtxt): 256x256, smaller faces than short-range.
    "blazeface_back": BlazeFaceSpec("face_detection_back.tflite", 256, (16, 32, 32, 32), 1.0, 0.5),
}


def ssd_anchor_centers(spec: BlazeFaceSpec, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Anchor centres [N, 2] (x, y in 0..1) as MediaPipe's SsdAnchorsCalculator makes them.

    Layers with the same stride share one feature map; each layer adds one anchor per aspect
    ratio plus one interpolated-scale anchor when ``interpolated_scale_aspect_ratio > 0``. With
    ``fixed_anchor_size`` (both face graphs) every anchor is 1x1, so only the centres matter.
    ``shape`` (height, width): the input the model was resized to, when not its square default.
    """
    h, w = shape or (spec.input_size, spec.input_size)
    per_layer = len(spec.aspect_ratios) + (1 if spec.interpolated_scale_aspect_ratio > 0 else 0)
    centers = []
    layer = 0
    while layer < len(spec.strides):
        stride = spec.strides[layer]
        last = layer
        while last < len(spec.strides) and spec.strides[last] == stride:
            last += 1
        repeats = per_layer * (last - layer)
        fh, fw = int(np.ceil(h / stride)), int(np.ceil(w / stride))
        ys, xs = np.meshgrid((np.arange(fh) + spec.anchor_offset) / fh, (np.arange(fw) + spec.anchor_offset) / fw, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centers.append(np.repeat(grid, repeats, axis=0))
        layer = last
    return np.concatenate(centers).astype(np.float32)


def decode_boxes(raw: np.ndarray, anchors: np.ndarray, input_size: int | tuple[int, int]) -> np.ndarray:
    """Raw regressors [N, >=4] -> boxes [N, 4] as (xmin, ymin, xmax, ymax) in 0..1 of the input.

    TensorsToDetectionsCalculator with x/y/w/h_scale = input size and anchor size 1, output order
    (x, y, w, h) ("reverse_output_order"). The regressors are input pixels, so a model resized to
    (height, width) = ``input_size`` divides x by its width and y by its height.
    """
    ih, iw = (input_size, input_size) if np.isscalar(input_size) else input_size
    cx = raw[:, 0] / iw + anchors[:, 0]
    cy = raw[:, 1] / ih + anchors[:, 1]
    w = raw[:, 2] / iw
    h = raw[:, 3] / ih
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def decode_keypoints(raw: np.ndarray, anchors: np.ndarray, input_size: int | tuple[int, int]) -> np.ndarray:
    """Raw regressors [N, 16] -> the 6 keypoints [N, 6, 2] (x, y in 0..1 of the input).

    Order (MediaPipe): right eye, left eye, nose tip, mouth centre, right ear tragion, left ear
    tragion; "right" is the subject's, so on the image's left for a camera facing the person.
    """
    ih, iw = (input_size, input_size) if np.isscalar(input_size) else input_size
    kx = raw[:, 4::2] / iw + anchors[:, :1]
    ky = raw[:, 5::2] / ih + anchors[:, 1:2]
    return np.stack([kx, ky], axis=-1)


def shaped_path(path: Path, shape: tuple[int, int]) -> Path:
    """``foo.tflite`` -> ``foo_<h>x<w>.tflite``: the int8 model converted for that static input (height, width)."""
    return path.with_name(f"{path.stem}_{shape[0]}x{shape[1]}{path.suffix}")


def flatten_heads(heads: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Detection heads (score maps, then regressor maps, each [1, h, w, anchors * channels], finest stride
    first) -> (regressors [N, 16], logits [N]) in the anchor order of ``ssd_anchor_centers`` (each cell's
    anchors together, stride 8 cells first): what the float model's reshape and concatenation give."""
    half = len(heads) // 2
    logits = np.concatenate([np.asarray(x).reshape(-1) for x in heads[:half]])
    raw = np.concatenate([np.asarray(x).reshape(-1, 16) for x in heads[half:]])
    return raw, logits


def order_heads(details: list[dict]) -> list[dict]:
    """The int8 model's output details as ``flatten_heads`` wants them: score maps (last axis = anchors per
    cell, < 16) then regressor maps (16 per anchor), each finest stride (largest map) first."""
    def area(d):
        return -int(d["shape"][1]) * int(d["shape"][2])
    scores = sorted((d for d in details if int(d["shape"][-1]) < 16), key=area)
    regs = sorted((d for d in details if int(d["shape"][-1]) >= 16), key=area)
    return scores + regs


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box with each row of ``boxes``."""
    inter = _intersection(box, boxes)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _intersection(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    return np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float,
                 keypoints: np.ndarray | None = None, flags: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """MediaPipe's WEIGHTED non-maximum suppression.

    Repeatedly take the best remaining box, gather every remaining box overlapping it by IoU >
    ``threshold`` (itself included) and replace them by their score-weighted mean box (and mean
    keypoints, when given), keeping the best score. Returns (boxes [K, 4], scores [K]) or, with
    ``keypoints`` [N, P, 2], (boxes, scores, keypoints [K, P, 2]); with ``flags`` [N] (bool, or integer bit
    masks) also each group's flags OR-ed together [K] (any box flagged; which passes joined).
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores = boxes[order], scores[order]
    kps = keypoints[order] if keypoints is not None else np.zeros((len(boxes), 0, 2), np.float32)
    flg = np.asarray(flags)[order] if flags is not None else np.zeros(len(boxes), bool)
    kept_boxes, kept_scores, kept_kps, kept_flags = [], [], [], []
    while len(boxes):
        overlap = iou_one_to_many(boxes[0], boxes) > threshold
        overlap[0] = True
        w = scores[overlap]
        kept_boxes.append((boxes[overlap] * w[:, None]).sum(axis=0) / w.sum())
        kept_kps.append((kps[overlap] * w[:, None, None]).sum(axis=0) / w.sum())
        kept_scores.append(scores[0])
        kept_flags.append(np.bitwise_or.reduce(flg[overlap]))
        boxes, scores, kps, flg = boxes[~overlap], scores[~overlap], kps[~overlap], flg[~overlap]
    out = [np.asarray(kept_boxes, np.float32).reshape(-1, 4), np.asarray(kept_scores, np.float32).reshape(-1)]
    if keypoints is not None:
        out.append(np.asarray(kept_kps, np.float32).reshape(len(out[0]), keypoints.shape[1], 2))
    if flags is not None:
        out.append(np.asarray(kept_flags, flg.dtype).reshape(-1))
    return tuple(out)


def suppress_contained(boxes: np.ndarray, scores: np.ndarray, fraction: float = 0.6) -> np.ndarray:
    """Indices to keep, best score first: a box whose intersection with a better-scored kept box covers
    more than ``fraction`` of the smaller of the two is dropped (a part of a face found at another
    scale, or a face found twice by passes whose boxes differ in size, which IoU alone misses)."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in order:
        if keep:
            k = np.asarray(keep)
            inter = _intersection(boxes[i], boxes[k])
            if (inter > fraction * np.minimum(areas[i], areas[k])).any():
                continue
        keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def letterbox(image_bgr: np.ndarray, size: int) -> tuple[np.ndarray, float, int, int]:
    """Resize keeping the aspect ratio into a ``size`` x ``size`` RGB canvas (black borders).

    Returns (canvas uint8 RGB, scale, pad_x, pad_y): input pixel = (canvas pixel - pad) / scale.
    """
    import cv2

    h, w = image_bgr.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    resized = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((size, size, 3), np.uint8)
    pad_x, pad_y = (size - nw) // 2, (size - nh) // 2
    canvas[pad_y : pad_y + nh, pad_x : pad_x + nw] = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    return canvas, scale, pad_x, pad_y


def merge_detections(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, iou: float = 0.3,
                     contained: float = 0.6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge the detections of several passes: weighted NMS (IoU > ``iou``), then drop boxes mostly
    inside a better one (``suppress_contained``). Returns (boxes, scores, keypoints), best first."""
    if not len(boxes):
        return boxes, scores, keypoints
    boxes, scores, keypoints = weighted_nms(boxes, scores, iou, keypoints)
    keep = suppress_contained(boxes, scores, contained)
    return boxes[keep], scores[keep], keypoints[keep]


class BlazeFaceModel:
    """One BlazeFace model on the TFLite runtime: ``run(image)`` -> boxes, scores, keypoints.

    ``shape`` (height, width): run it on a whole frame scaled to that size (the short-range and back models
    are fully convolutional; anchors follow the feature maps): an int8 model's ``<name>_<h>x<w>.tflite`` when
    it ships, else the model's input resized (CPU only). None: its own square input, the frame letterboxed
    into it. ``accelerator`` (``"cpu"``, ``"tpu"``, ``"auto"``; ``device`` as ``[model] device``): an int8
    model at a static shape may run on the Edge TPU; float models and resized inputs run on the CPU.
    ``backend`` says where it runs.
    """

    def __init__(self, name: str, threads: int = 1, model_dir: Path = MODELS_DIR, shape: tuple[int, int] | None = None,
                 accelerator: str = "cpu", device: str | None = None):
        self.name, self.spec, self.shape = name, BLAZEFACE_SPECS[name], shape
        path = Path(model_dir) / self.spec.filename
        resize = shape is not None
        if resize and self.spec.int8 and shaped_path(path, shape).is_file():
            path, resize = shaped_path(path, shape), False
        # A float model gains nothing from the Edge TPU, and the TPU cannot resize a compiled model's input.
        on_tpu = accelerator if self.spec.int8 and not resize else "cpu"
        self.interpreter, self.backend, self.path = make_interpreter(path, on_tpu, device, threads)
        inp = self.interpreter.get_input_details()[0]
        want = [1, *(shape if shape is not None and not resize else (self.spec.input_size,) * 2), 3]
        if [int(v) for v in inp["shape"]] != want:
            raise ModelError(f"{path} has input shape {[int(v) for v in inp['shape']]}, expected {want} (a BlazeFace "
                             "model): reinstall fer-edge or re-run `fer-edge convert-detector`")
        self._input, self._in_dtype = inp["index"], inp["dtype"]
        self._in_quant = inp["quantization"]
        if resize:
            try:
                self.interpreter.resize_tensor_input(self._input, [1, shape[0], shape[1], 3])
                self.interpreter.allocate_tensors()
            except (RuntimeError, ValueError) as exc:
                raise ModelError(f"{path.name} cannot run at {shape[1]}x{shape[0]} ({exc}); use it at its own size") from None
        details = self.interpreter.get_output_details()
        if len(details) == 4:  # int8: the heads, flattened in numpy
            self._heads = order_heads(details)
        else:
            outs = sorted(details, key=lambda d: int(d["shape"][-1]), reverse=True)
            self._heads = None
            self._regressors, self._classifiers = outs[0]["index"], outs[1]["index"]
        self.anchors = ssd_anchor_centers(self.spec, shape)
        self.interpreter.invoke()  # sizes every output (a resized input), and the first frame is not slower
        n_out = len(self._outputs()[1])
        if len(self.anchors) != n_out:
            raise ModelError(f"{path} has {n_out} anchors, expected {len(self.anchors)}: reinstall fer-edge")

    def _outputs(self) -> tuple[np.ndarray, np.ndarray]:
        """(regressors [N, 16], logits [N]) of the last invoke, float32."""
        if self._heads is None:
            return self.interpreter.get_tensor(self._regressors)[0], self.interpreter.get_tensor(self._classifiers)[0, :, 0]
        return flatten_heads([dequantize(self.interpreter.get_tensor(d["index"]), d) for d in self._heads])

    def _input_tensor(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float, float, int, int]:
        """(tensor, x scale, y scale, pad x, pad y): image pixel = (input pixel - pad) / scale."""
        import cv2

        if self.shape is None:
            canvas, scale, pad_x, pad_y = letterbox(image_bgr, self.spec.input_size)
            return canvas, scale, scale, pad_x, pad_y
        h, w = self.shape
        ih, iw = image_bgr.shape[:2]
        resized = cv2.resize(image_bgr, (w, h), interpolation=cv2.INTER_AREA if w < iw else cv2.INTER_LINEAR)
        return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB), w / iw, h / ih, 0, 0

    def run(self, image_bgr: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detections in the image after this model's weighted NMS.

        Returns (boxes [K, 4] as x0, y0, x1, y1 in image pixels, unclipped; scores [K]; keypoints [K, 6, 2]).
        """
        canvas, sx, sy, pad_x, pad_y = self._input_tensor(image_bgr)
        if self._in_dtype == np.float32:
            tensor = (canvas.astype(np.float32) * (1 / 127.5) - 1.0)[None]  # the graphs feed RGB in [-1, 1]
        else:  # the same [-1, 1] input, quantized as the int8 model's QUANTIZE would
            tensor = quantize_input(canvas[None], 127.5, 127.5, *self._in_quant, self._in_dtype)
        invoke(self.interpreter, tensor, self._input)
        raw, logits = self._outputs()
        # Threshold in logit space (sigmoid is monotonic): only the kept anchors need exp().
        keep = logits >= np.log(min_score / (1.0 - min_score)) if 0 < min_score < 1 else logits > -np.inf
        if not keep.any():
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 6, 2), np.float32)
        clip = self.spec.score_clipping_thresh
        scores = (1.0 / (1.0 + np.exp(-np.clip(logits[keep].astype(np.float64), -clip, clip)))).astype(np.float32)
        hw = canvas.shape[:2]
        boxes = decode_boxes(raw[keep], self.anchors[keep], hw)
        kps = decode_keypoints(raw[keep], self.anchors[keep], hw)
        boxes, kept, kps = weighted_nms(boxes, scores, self.spec.min_suppression_threshold, kps)
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] * hw[1] - pad_x) / sx
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] * hw[0] - pad_y) / sy
        kps[..., 0] = (kps[..., 0] * hw[1] - pad_x) / sx
        kps[..., 1] = (kps[..., 1] * hw[0] - pad_y) / sy
        return boxes, kept, kps
