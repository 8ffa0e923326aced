"""Every Keras layer and model of keras_sf2f.models through tests/harness.py's ``run_layer_test``:
forward pass (shapes, dtype), get_config naming every constructor argument, from_config with
copied weights and .keras save/load giving identical outputs.

Small widths keep the quick cases to seconds; the full-size networks (FaceNet, the VGGFace2
ResNet-50, a released SF2F generator) are marked slow. ``test_every_layer_class_is_covered``
fails when a new layer class is added to keras_sf2f/models/ without a case here.
"""

import importlib
import inspect
import pkgutil

import keras
import numpy as np
import pytest

from harness import random_inputs, run_layer_test
from keras_sf2f import models as models_package
from keras_sf2f.models import discriminators, face_decoder, facenet, fast_conv, fuser, generator
from keras_sf2f.models import fused_batch_norm
from keras_sf2f.models import layers, vggface_resnet, voice_encoder

MASK = np.array([[True, True, False], [True, True, True]])


def _encoder(**kwargs):
    """A narrow SF2F encoder (inception blocks, a fuser): 8/8/16/16 channels, 32-d."""
    kwargs.setdefault("fuser", fuser.AttentionFuser(32))
    return voice_encoder.VoiceEncoder("inception", channels=(8, 8, 16, 16), embedding_dim=32,
                                      **kwargs)


# (case id, class, init kwargs (a function: sub-layers must be fresh per run), run_layer_test
# arguments)
CASES = [
    # layers.py
    ("glu", layers.GLU, dict, dict(input_shape=(2, 5, 6))),
    ("conv1d_block", layers.Conv1DBlock,
     lambda: dict(filters=8, kernel_size=5, strides=2, padding=2), dict(input_shape=(2, 17, 4))),
    ("inception1d_block_odd_length", layers.Inception1DBlock, lambda: dict(branch_filters=4),
     dict(input_shape=(2, 15, 4))),
    ("inception1d_block_even_length", layers.Inception1DBlock, lambda: dict(branch_filters=4),
     dict(input_shape=(2, 16, 4))),
    ("up_block", layers.UpBlock, lambda: dict(filters=4), dict(input_shape=(2, 4, 4, 8))),
    ("to_image", layers.ToImage,
     lambda: dict(filters=8, output_channels=3, negative_slope=0.2),
     dict(input_shape=(2, 8, 8, 8))),
    # fast_conv.py
    ("fast_conv2d", fast_conv.Conv2D,
     lambda: dict(filters=4, kernel_size=(3, 3), strides=(2, 2), padding="valid"),
     dict(input_shape=(2, 9, 9, 3))),
    ("fast_conv1d", fast_conv.Conv1D,
     lambda: dict(filters=4, kernel_size=(3,), strides=(2,), padding="same"),
     dict(input_shape=(2, 11, 5))),
    # fused_batch_norm.py: 2-D, 3-D and 4-D inputs (each reshaped differently for the fused op)
    ("fused_batch_norm_2d", fused_batch_norm.BatchNormalization,
     lambda: dict(epsilon=1e-5, momentum=0.9), dict(input_shape=(4, 6))),
    ("fused_batch_norm_3d", fused_batch_norm.BatchNormalization,
     lambda: dict(epsilon=1e-5, momentum=0.9, center=False), dict(input_shape=(2, 7, 6))),
    ("fused_batch_norm_4d", fused_batch_norm.BatchNormalization,
     lambda: dict(epsilon=1e-3, momentum=0.99, scale=False), dict(input_shape=(2, 5, 5, 6))),
    # fuser.py
    ("attention_fuser", fuser.AttentionFuser, lambda: dict(embedding_dim=16, output_dim=8),
     dict(input_shape=(2, 3, 16), call_kwargs=dict(segment_mask=MASK))),
    # voice_encoder.py
    ("voice_encoder_inception_fuser", voice_encoder.VoiceEncoder,
     lambda: dict(mode="inception", channels=(8, 8, 16, 16), embedding_dim=32,
                  fuser=fuser.AttentionFuser(32)),
     dict(input_shape=(2, 3, 50, 40), call_kwargs=dict(segment_mask=MASK))),
    ("voice_encoder_cnn_crop", voice_encoder.VoiceEncoder,
     lambda: dict(mode="cnn", channels=(8, 8, 16, 16), embedding_dim=32, input_channels=40),
     dict(input_shape=(2, 45, 40))),
    # The baseline's noise arguments must survive the round trip (noise off at inference, so
    # that the outputs are comparable).
    ("voice_encoder_cnn_noise", voice_encoder.VoiceEncoder,
     lambda: dict(mode="cnn", channels=(8, 8, 16, 16), embedding_dim=32, add_noise=True,
                  noise_stddev=0.1, noise_at_inference=False, seed=3),
     dict(input_shape=(2, 45, 40))),
    # face_decoder.py
    ("face_decoder", face_decoder.FaceDecoder, lambda: dict(embedding_dim=32, image_size=64),
     dict(input_shape=(2, 32))),
    ("multi_resolution_face_decoder", face_decoder.MultiResolutionFaceDecoder,
     lambda: dict(embedding_dim=64, image_size=32), dict(input_shape=(2, 64))),
    ("deconv_face_decoder", face_decoder.DeconvFaceDecoder,
     lambda: dict(embedding_dim=32, channels=(16, 8, 8, 8, 8), output_channels=3),
     dict(input_shape=(2, 32))),
    # discriminators.py
    ("conv_stack", discriminators.ConvStack,
     lambda: dict(arch="C4-8-2,C3-8-1-1,C1-4", normalization="batch",
                  activation="leakyrelu-0.2", padding="valid"),
     dict(input_shape=(2, 16, 16, 3))),
    ("patch_discriminator", discriminators.PatchDiscriminator,
     lambda: dict(arch="C4-8-2,C4-16-2", normalization="batch", activation="leakyrelu-0.1",
                  padding="valid", image_size=32),
     dict(input_shape=(2, 32, 32, 3))),
    ("auxiliary_classifier", discriminators.AuxiliaryClassifier,
     lambda: dict(arch="C1-8-1-0,C4-8-2-1", num_identities=5, normalization="none",
                  activation="leakyrelu-0.2", padding="same", image_size=32, feature_dim=16),
     dict(input_shape=(2, 32, 32, 3))),
    # generator.py
    ("generator_fuser_128", generator.VoiceToFaceGenerator,
     lambda: dict(encoder=_encoder(), decoder=face_decoder.MultiResolutionFaceDecoder(32)),
     dict(input_shape=(2, 3, 40, 40), call_kwargs=dict(segment_mask=MASK))),
    ("generator_baseline_crop", generator.VoiceToFaceGenerator,
     lambda: dict(encoder=voice_encoder.VoiceEncoder("cnn", channels=(8, 8, 16, 16),
                                                     embedding_dim=32),
                  decoder=face_decoder.DeconvFaceDecoder(32, channels=(16, 8, 8, 8, 8))),
     dict(input_shape=(2, 45, 40))),
    # facenet.py (quarter width: the face-identity network's blocks)
    ("basic_conv2d", facenet.BasicConv2d,
     lambda: dict(filters=8, kernel_size=(1, 7), strides=1, padding="same"),
     dict(input_shape=(2, 9, 9, 4))),
    ("block35", facenet.Block35, lambda: dict(scale=0.17, activate=True, width_multiplier=0.25),
     dict(input_shape=(2, 7, 7, 16))),
    ("block17", facenet.Block17, lambda: dict(scale=0.1, width_multiplier=0.25),
     dict(input_shape=(2, 7, 7, 24))),
    ("block8", facenet.Block8, lambda: dict(scale=1.0, activate=False, width_multiplier=0.25),
     dict(input_shape=(2, 3, 3, 32))),
    ("mixed6a", facenet.Mixed6a, lambda: dict(width_multiplier=0.25),
     dict(input_shape=(2, 9, 9, 16))),
    ("mixed7a", facenet.Mixed7a, lambda: dict(width_multiplier=0.25),
     dict(input_shape=(2, 9, 9, 16))),
    # The project's face-identity network (FaceNet.small's arguments), with a logits head.
    ("facenet_small", facenet.FaceNet,
     lambda: dict(num_classes=7, embedding_dim=128, width_multiplier=0.25, repeats=(1, 2, 1),
                  dropout_rate=0.6),
     dict(input_shape=(2, 80, 80, 3))),
    # vggface_resnet.py
    ("ceil_max_pool", vggface_resnet.CeilMaxPool2D, lambda: dict(pool_size=3, strides=2),
     dict(input_shape=(2, 8, 8, 4))),
    ("bottleneck", vggface_resnet.Bottleneck,
     lambda: dict(width=4, strides=2, downsample=True), dict(input_shape=(2, 8, 8, 8))),
    ("bottleneck_identity", vggface_resnet.Bottleneck,
     lambda: dict(width=4, strides=1, downsample=False), dict(input_shape=(2, 5, 5, 16))),
]

SLOW_CASES = [
    ("facenet_vggface2", facenet.FaceNet, lambda: dict(num_classes=None),
     dict(input_shape=(1, 140, 140, 3))),
    ("vggface_resnet50", vggface_resnet.VGGFaceResNet50,
     lambda: dict(num_classes=10, include_top=True), dict(input_shape=(1, 224, 224, 3))),
    # The released sf2f_128_fuser generator at full width.
    ("generator_sf2f_128_fuser", generator.VoiceToFaceGenerator,
     lambda: dict(encoder=voice_encoder.VoiceEncoder(fuser=fuser.AttentionFuser(512)),
                  decoder=face_decoder.MultiResolutionFaceDecoder(512)),
     dict(input_shape=(1, 2, 125, 40))),
]


@pytest.mark.parametrize("cls, make_kwargs, arguments",
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_layer(cls, make_kwargs, arguments):
    run_layer_test(cls, make_kwargs(), **arguments)


@pytest.mark.slow
@pytest.mark.parametrize("cls, make_kwargs, arguments",
                         [case[1:] for case in SLOW_CASES], ids=[case[0] for case in SLOW_CASES])
def test_full_size_model(cls, make_kwargs, arguments):
    run_layer_test(cls, make_kwargs(), **arguments)


def _layer_classes() -> set:
    """Every public Layer (and Model) class defined in a module of keras_sf2f.models."""
    found = set()
    for info in pkgutil.iter_modules(models_package.__path__):
        module = importlib.import_module(f"{models_package.__name__}.{info.name}")
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if (issubclass(obj, keras.layers.Layer) and obj.__module__ == module.__name__
                    and not name.startswith("_")):
                found.add(obj)
    return found


def test_every_layer_class_is_covered():
    covered = {case[1] for case in CASES + SLOW_CASES}
    missing = sorted(cls.__qualname__ for cls in _layer_classes() - covered)
    assert not missing, f"layer classes without a run_layer_test case: {missing}"


def test_the_harness_catches_a_config_that_forgets_an_argument():
    class Forgetful(keras.layers.Layer):
        def __init__(self, units=3, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.dense = keras.layers.Dense(units)

        def call(self, x):
            return self.dense(x)

        def compute_output_shape(self, input_shape):
            return tuple(input_shape[:-1]) + (self.units,)

        def get_config(self):  # overridden, and "units" forgotten
            return super().get_config()

    with pytest.raises(AssertionError, match="lacks the constructor argument 'units'"):
        run_layer_test(Forgetful, dict(units=5), random_inputs((2, 4)))
