"""Edge-TPU-friendly expression classifiers (mini-Xception family).

Every layer lowers to int8 ops the Edge TPU maps: Conv2D, DepthwiseConv2D (from SeparableConv2D),
Add, ReLU (fused), MaxPool2D, Mean (global average pooling), FullyConnected, Softmax. Batch norm
directly follows a convolution so the converter folds it into the convolution's weights; the
pre-activation variant keeps a BN before ReLU, which lowers to a quantized Mul+Add (also mapped).

A model is a short function of its hyper-parameters. ``batch_size=1`` builds the static-shape
variant that conversion needs (the Edge TPU compiler rejects a dynamic batch dimension).
"""

from __future__ import annotations

import keras
from keras import layers

INPUT_SHAPE = (48, 48, 1)
NUM_CLASSES = 7


def _conv_bn(x, filters, kernel, strides=1, relu=True, l2=0.0, name=None):
    reg = keras.regularizers.l2(l2) if l2 else None
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False,
                      kernel_regularizer=reg, name=name)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x) if relu else x


def _sep_bn(x, filters, relu=True, l2=0.0):
    reg = keras.regularizers.l2(l2) if l2 else None
    x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False,
                               depthwise_regularizer=reg, pointwise_regularizer=reg)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x) if relu else x


def _xception_block(x, filters, convs=2, l2=0.0):
    """Arriaga et al.'s residual module: 1x1/2 shortcut + (SepConv-BN-ReLU) x convs + MaxPool/2."""
    shortcut = _conv_bn(x, filters, 1, strides=2, relu=False, l2=l2)
    for i in range(convs):
        x = _sep_bn(x, filters, relu=i < convs - 1, l2=l2)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    return layers.Add()([x, shortcut])


def mini_xception(stem_filters=8, block_filters=(16, 32, 64, 128), convs_per_block=2, l2=0.0,
                  dropout=0.0, head="conv", input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES,
                  batch_size=None, name="mini_xception"):
    """mini-Xception (Arriaga, Ploger, Valdenegro 2017): ~58k parameters at the defaults.

    stem_filters: width of the two 3x3 stem convolutions; block_filters: width of each residual
    block (each halves the resolution); head: "conv" (3x3 conv to classes + global average pool,
    as in the paper) or "dense" (global average pool + dropout + dense).
    """
    inputs = keras.Input(shape=input_shape, batch_size=batch_size, name="image")
    x = _conv_bn(inputs, stem_filters, 3, l2=l2)
    x = _conv_bn(x, stem_filters, 3, l2=l2)
    for f in block_filters:
        x = _xception_block(x, f, convs=convs_per_block, l2=l2)
    return keras.Model(inputs, _classifier_head(x, num_classes, dropout, head), name=name)


def _classifier_head(x, num_classes, dropout=0.0, head="dense"):
    """Scores from a feature map: "conv" = dropout, 3x3 conv to classes, global average pool
    (Arriaga et al.); "dense" = global average pool, dropout, dense. Softmax either way."""
    if head == "conv":
        if dropout:
            x = layers.Dropout(dropout)(x)
        x = layers.Conv2D(num_classes, 3, padding="same")(x)
        x = layers.GlobalAveragePooling2D()(x)
    else:
        x = layers.GlobalAveragePooling2D()(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
        x = layers.Dense(num_classes)(x)
    return layers.Softmax(name="scores")(x)


def _preact_block(x, filters, l2=0.0):
    """Pre-activated residual depthwise-separable block (after Tian et al. 2022), stride 2."""
    reg = keras.regularizers.l2(l2) if l2 else None
    shortcut = layers.Conv2D(filters, 1, strides=2, padding="same", kernel_regularizer=reg)(x)
    y = layers.BatchNormalization()(x)
    y = layers.ReLU()(y)
    y = layers.SeparableConv2D(filters, 3, padding="same", depthwise_regularizer=reg,
                               pointwise_regularizer=reg)(y)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    y = layers.SeparableConv2D(filters, 3, strides=2, padding="same", depthwise_regularizer=reg,
                               pointwise_regularizer=reg)(y)
    return layers.Add()([y, shortcut])


def preact_tiny(stem_filters=16, block_filters=(24, 48, 80, 112), l2=0.0, dropout=0.2,
                input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES, batch_size=None, name="tiny"):
    """Tiny pre-activated residual depthwise-separable network (<= 60k parameters at the defaults)."""
    inputs = keras.Input(shape=input_shape, batch_size=batch_size, name="image")
    x = _conv_bn(inputs, stem_filters, 3, l2=l2)
    for f in block_filters:
        x = _preact_block(x, f, l2=l2)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    return keras.Model(inputs, _classifier_head(x, num_classes, dropout, "dense"), name=name)


def standard(batch_size=None, name="standard", **kw):
    """Wide mini-Xception (~1.1M parameters): 32-wide stem, blocks of 64..512, three convs each."""
    kw.setdefault("stem_filters", 32)
    kw.setdefault("block_filters", (64, 128, 256, 512))
    kw.setdefault("convs_per_block", 3)
    kw.setdefault("dropout", 0.3)
    kw.setdefault("head", "dense")
    return mini_xception(batch_size=batch_size, name=name, **kw)


MODELS = {
    "mini_xception": mini_xception,
    "tiny": preact_tiny,
    "standard": standard,
}


def build_model(name: str, batch_size=None, **overrides) -> keras.Model:
    """Build a registered model by name (see ``MODELS``) with optional hyper-parameter overrides."""
    if name not in MODELS:
        from edge.errors import FerEdgeError
        raise FerEdgeError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](batch_size=batch_size, **overrides)


def with_batch_size_one(model: keras.Model, name: str, **overrides) -> keras.Model:
    """Rebuild ``model`` (a registered architecture) with a static batch of 1 and copy its weights."""
    static = build_model(name, batch_size=1, **overrides)
    static.set_weights(model.get_weights())
    return static
