"""VGGFace2 ResNet-50 (Caffe style) in Keras 3, NHWC, and an importer for its numpy pickle.

SF2F's "VGGFace score" classifies generated faces with the VGGFace2
``resnet50_ft`` network as converted to PyTorch by cydonia999/VGGFace2-pytorch. The topology:

    conv1 7x7/2 pad 3 (no bias) -> bn1 -> ReLU -> maxpool 3x3/2, pad 0, ceil_mode=True
    layer1..layer4: Bottleneck x [3, 4, 6, 3], widths 64/128/256/512 (x4 out), the stride on
      the first 1x1 conv (Caffe style), a 1x1 conv + BN "downsample" on the first block of
      every stage
    AvgPool2d(7, stride=1) -> flatten -> fc (2048 -> 8631, with bias)

BatchNorm epsilon 1e-5 (PyTorch default), Keras momentum 0.9. PyTorch's padding 3 on the
stride-2 7x7 conv is not Keras 'same' on even inputs (Keras pads 2/3), so the stem pads
explicitly; ``ceil_mode`` max-pooling is emulated by padding the bottom/right with -inf
(``CeilMaxPool2D``). Input 224x224 (the only size for which the 7x7 average pool yields 1x1).

Trainable parameters: 23,508,032 trunk + 17,684,919 fc = 41,192,951.

Weights: nothing can be downloaded here. Users who have ``resnet50_ft_weight.pkl`` (a pickled
dict of numpy arrays keyed by the PyTorch names) import it with

    from keras_sf2f.models.vggface_resnet import import_vggface_resnet50
    model = import_vggface_resnet50("resnet50_ft_weight.pkl")
    model.save("vggface2_resnet50.keras")   # or model.save_weights("....weights.h5")

The pickle is opened with ``load_numpy_pickle``, a restricted unpickler
that resolves no global except the handful numpy needs to rebuild arrays and dtypes (plus
``collections.OrderedDict`` and a latin1-only ``_codecs.encode``, which Python 3 uses for bytes
at protocol 2); anything else -- functions, classes, modules -- is refused before
it is called, and the result must be a dict of str -> numeric numpy arrays.

Input pre-processing of the reference (``vggface_inputs``): pixels in [0, 255] (uint8 from
``imagenet_deprocess_batch`` in the reference) minus ``[131.0912, 103.8827, 91.4953]`` per
channel on **RGB** images (the reference's channel-order quirk: the Caffe-trained model
expects BGR, but the reference never flips the channels, and its published scores come
from RGB input; ``channel_order='bgr'`` gives the Caffe-correct variant), then
align_corners bilinear resize to 224x224.
"""

from __future__ import annotations

import math
from typing import Mapping

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from keras_sf2f.models import state_dict as sd
from keras_sf2f.models.face_preprocessing import resize_bilinear_align_corners
from keras_sf2f.safe_pickle import UnsafePickleError, load_plain_pickle

_PACKAGE = "keras_sf2f"
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
VGGFACE2_NUM_CLASSES = 8631
STAGE_BLOCKS = (3, 4, 6, 3)
STAGE_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
RESNET50_PARAMS = 41_192_951
RESNET50_TRUNK_PARAMS = 23_508_032
INPUT_SIZE = 224
# Mean pixel of the Caffe model, in the order the reference subtracts it from RGB images.
REFERENCE_MEAN = (131.0912, 103.8827, 91.4953)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CeilMaxPool2D(layers.Layer):
    """Max-pooling with PyTorch ``ceil_mode=True`` and no padding: the last, partial window
    is kept when it starts inside the input (pads the bottom/right with -inf)."""

    def __init__(self, pool_size: int = 3, strides: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.pool_size = int(pool_size)
        self.strides = int(strides)

    def _out_and_pad(self, n):
        k, s = self.pool_size, self.strides
        out = int(math.ceil((n - k) / s)) + 1
        if (out - 1) * s >= n:  # PyTorch: the last window must start inside the input
            out -= 1
        return out, max(0, (out - 1) * s + k - n)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        return (b, None if h is None else self._out_and_pad(h)[0],
                None if w is None else self._out_and_pad(w)[0], c)

    def call(self, x):
        h, w = x.shape[1], x.shape[2]
        if h is None or w is None:
            raise ValueError("CeilMaxPool2D needs static spatial dimensions")
        _, pad_h = self._out_and_pad(int(h))
        _, pad_w = self._out_and_pad(int(w))
        if pad_h or pad_w:
            x = ops.pad(x, [[0, 0], [0, pad_h], [0, pad_w], [0, 0]],
                        constant_values=float("-inf"))
        return ops.max_pool(x, self.pool_size, self.strides, padding="valid")

    def get_config(self):
        config = super().get_config()
        config.update(pool_size=self.pool_size, strides=self.strides)
        return config


def _bn(name, policy):
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name,
                                     dtype=policy)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Bottleneck(layers.Layer):
    """Caffe-style bottleneck: 1x1/stride -> 3x3 -> 1x1 (x4), each conv without bias + BN,
    optional 1x1/stride conv + BN shortcut ("downsample"). PyTorch keys ``conv{1,2,3}.weight``,
    ``bn{1,2,3}.*``, ``downsample.0.weight``, ``downsample.1.*``."""

    def __init__(self, width: int, strides: int = 1, downsample: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.width = int(width)
        self.strides = int(strides)
        self.downsample = bool(downsample)
        p = self.dtype_policy
        self.conv1 = layers.Conv2D(self.width, 1, strides=self.strides, use_bias=False,
                                   name="conv1", dtype=p)
        self.bn1 = _bn("bn1", p)
        self.conv2 = layers.Conv2D(self.width, 3, padding="same", use_bias=False, name="conv2",
                                   dtype=p)
        self.bn2 = _bn("bn2", p)
        self.conv3 = layers.Conv2D(self.width * EXPANSION, 1, use_bias=False, name="conv3",
                                   dtype=p)
        self.bn3 = _bn("bn3", p)
        if self.downsample:
            self.down_conv = layers.Conv2D(self.width * EXPANSION, 1, strides=self.strides,
                                           use_bias=False, name="downsample_conv", dtype=p)
            self.down_bn = _bn("downsample_bn", p)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            bn.build(shape)
        if self.downsample:
            self.down_conv.build(tuple(input_shape))
            self.down_bn.build(self.down_conv.compute_output_shape(tuple(input_shape)))
        self.built = True

    def compute_output_shape(self, input_shape):
        shape = self.conv1.compute_output_shape(tuple(input_shape))
        return tuple(shape[:-1]) + (self.width * EXPANSION,)

    def call(self, x, training=None):
        y = ops.relu(self.bn1(self.conv1(x), training=training))
        y = ops.relu(self.bn2(self.conv2(y), training=training))
        y = self.bn3(self.conv3(y), training=training)
        shortcut = self.down_bn(self.down_conv(x), training=training) if self.downsample else x
        return ops.relu(y + shortcut)

    def get_config(self):
        config = super().get_config()
        config.update(width=self.width, strides=self.strides, downsample=self.downsample)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class VGGFaceResNet50(keras.Model):
    """VGGFace2 ResNet-50 classifier. ``model(images)`` -> logits (B, num_classes), or the
    pooled 2048-d features if ``include_top=False``. ``images``: (B, 224, 224, 3), mean-
    subtracted pixels (see ``vggface_inputs``)."""

    def __init__(self, num_classes: int = VGGFACE2_NUM_CLASSES, include_top: bool = True,
                 name: str = "vggface_resnet50", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.include_top = bool(include_top)
        p = self.dtype_policy
        self.pad1 = layers.ZeroPadding2D(3, name="pad1", dtype=p)
        self.conv1 = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1", dtype=p)
        self.bn1 = _bn("bn1", p)
        self.maxpool = CeilMaxPool2D(3, 2, name="maxpool", dtype=p)
        self.stages = []
        for s, (blocks, width) in enumerate(zip(STAGE_BLOCKS, STAGE_WIDTHS)):
            stage = [Bottleneck(width, strides=(1 if s == 0 else 2) if i == 0 else 1,
                                downsample=(i == 0), name=f"layer{s + 1}_{i}", dtype=p)
                     for i in range(blocks)]
            self.stages.append(stage)
        self.avgpool = layers.AveragePooling2D(7, strides=1, name="avgpool", dtype=p)
        self.fc = (layers.Dense(self.num_classes, name="fc", dtype=p) if self.include_top
                   else None)

    def build(self, input_shape):
        shape = (None,) + tuple(input_shape[1:])
        for layer in [self.pad1, self.conv1, self.bn1, self.maxpool] + sum(self.stages, []):
            if not layer.built:
                layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
        shape = self.avgpool.compute_output_shape(shape)
        if self.fc is not None:
            self.fc.build((None, shape[-1]))
        self.built = True

    def features(self, images, training=False):
        """Pooled (B, 2048) features (the reference's ``include_top=False`` output, flattened)."""
        x = ops.relu(self.bn1(self.conv1(self.pad1(images)), training=training))
        x = self.maxpool(x)
        for stage in self.stages:
            for block in stage:
                x = block(x, training=training)
        x = self.avgpool(x)
        if x.shape[1] != 1 or x.shape[2] != 1:
            raise ValueError(f"VGGFaceResNet50 expects {INPUT_SIZE}x{INPUT_SIZE} inputs "
                             f"(7x7 final grid); got a pooled grid of {tuple(x.shape[1:3])}")
        return ops.reshape(x, (-1, x.shape[-1]))

    def call(self, images, training=None):
        pooled = self.features(images, training=training)
        return self.fc(pooled) if self.fc is not None else pooled

    def compute_output_shape(self, input_shape):
        width = self.num_classes if self.fc is not None else STAGE_WIDTHS[-1] * EXPANSION
        return (input_shape[0], width)

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, include_top=self.include_top)
        return config


def vggface_inputs(pixels, channel_order: str = "reference", size: int = INPUT_SIZE):
    """Pixels in [0, 255], NHWC RGB -> network inputs (B, size, size, 3).

    ``channel_order='reference'`` subtracts ``REFERENCE_MEAN`` from the RGB channels as SF2F
    does (no channel flip); ``'bgr'`` flips to BGR and subtracts the Caffe BGR mean, which is
    what the model was trained on."""
    pixels = tf.cast(tf.convert_to_tensor(pixels), tf.float32)
    if channel_order == "reference":
        x = pixels - tf.constant(REFERENCE_MEAN, tf.float32)
    elif channel_order == "bgr":
        x = pixels[..., ::-1] - tf.constant(REFERENCE_MEAN[::-1], tf.float32)
    else:
        raise ValueError(f"channel_order must be 'reference' or 'bgr', got {channel_order!r}")
    return resize_bilinear_align_corners(x, size)


# --- restricted numpy pickle reader -----------------------------------------------------------

def load_numpy_pickle(path: str) -> dict:
    """Reads a pickled ``{name: numpy array}`` dict (Python 2 pickles too) through the
    project's restricted unpickler (keras_sf2f/safe_pickle.py): nothing but numpy's array
    reconstructors can run."""
    try:
        obj = load_plain_pickle(path)
    except UnsafePickleError as e:
        raise sd.StateDictError(str(e)) from e
    out = {}
    for key, value in obj.items():
        if not isinstance(value, np.ndarray):
            raise sd.StateDictError(f"{path}: {key} is a {type(value).__name__}, not an array")
        out[key] = value
    return out


# --- importer --------------------------------------------------------------------------------

def _bn_entries(bn, prefix):
    return [(f"{prefix}.weight", bn.gamma, None), (f"{prefix}.bias", bn.beta, None),
            (f"{prefix}.running_mean", bn.moving_mean, None),
            (f"{prefix}.running_var", bn.moving_variance, None)]


def vggface_key_map(model: VGGFaceResNet50) -> dict:
    """PyTorch key -> (Keras variable, converter or None) for a built model."""
    if not model.built:
        raise ValueError("build the model (model.build((None, 224, 224, 3))) first")
    entries = [("conv1.weight", model.conv1.kernel, sd.conv2d_kernel)]
    entries += _bn_entries(model.bn1, "bn1")
    for s, stage in enumerate(model.stages):
        for i, block in enumerate(stage):
            prefix = f"layer{s + 1}.{i}"
            for j, (conv, bn) in enumerate(((block.conv1, block.bn1), (block.conv2, block.bn2),
                                            (block.conv3, block.bn3)), start=1):
                entries.append((f"{prefix}.conv{j}.weight", conv.kernel, sd.conv2d_kernel))
                entries += _bn_entries(bn, f"{prefix}.bn{j}")
            if block.downsample:
                entries.append((f"{prefix}.downsample.0.weight", block.down_conv.kernel,
                                sd.conv2d_kernel))
                entries += _bn_entries(block.down_bn, f"{prefix}.downsample.1")
    if model.fc is not None:
        entries += [("fc.weight", model.fc.kernel, sd.dense_kernel),
                    ("fc.bias", model.fc.bias, None)]
    return {k: (v, c) for k, v, c in entries}


def load_vggface_state_dict(model: VGGFaceResNet50, state: Mapping,
                            what: str = "VGGFace2 ResNet-50") -> VGGFaceResNet50:
    """Assigns a ResNet-50 state dict (numpy arrays or torch tensors) after checking every key
    and shape; nothing is assigned on a mismatch."""
    state = sd.to_numpy(state)
    key_map = vggface_key_map(model)
    sd.check_keys(key_map.keys(), state.keys(), what)
    converted = []
    for key, (var, convert) in key_map.items():
        value = np.asarray(state[key])
        value = convert(value) if convert is not None else value
        if tuple(value.shape) != tuple(var.shape):
            raise sd.StateDictError(f"{what}: {key} has shape {tuple(state[key].shape)}, the "
                                    f"model expects {tuple(var.shape)} (Keras layout) for "
                                    f"{var.path}")
        converted.append((var, value))
    for var, value in converted:
        var.assign(value.astype(var.dtype))
    return model


def import_vggface_resnet50(path_or_state, include_top: bool = True) -> VGGFaceResNet50:
    """Builds a ``VGGFaceResNet50`` and loads ``resnet50_ft_weight.pkl`` (restricted
    unpickling) or an in-memory state dict into it."""
    if isinstance(path_or_state, Mapping):
        state = sd.to_numpy(path_or_state)
    else:
        import os  # noqa: PLC0415
        if not os.path.exists(path_or_state):
            raise FileNotFoundError(f"weight file not found: {path_or_state}")
        state = load_numpy_pickle(path_or_state)
    num_classes = VGGFACE2_NUM_CLASSES
    if include_top and "fc.weight" in state:
        num_classes = int(np.shape(state["fc.weight"])[0])
    if not include_top:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    model = VGGFaceResNet50(num_classes=num_classes, include_top=include_top)
    model.build((None, INPUT_SIZE, INPUT_SIZE, 3))
    return load_vggface_state_dict(model, state)
