"""FaceNet (Inception-ResNet-v1) in Keras: structure, serialisation, SF2F pre-processing and
numerical parity with an independent PyTorch implementation (tests/torch_facenet.py) through
the facenet-pytorch state-dict importer."""

import numpy as np
import pytest
import tensorflow as tf

import keras

torch = pytest.importorskip("torch")
F = torch.nn.functional

from torch_facenet import TorchInceptionResnetV1, randomize_  # noqa: E402

from keras_sf2f import image_ranges as ir  # noqa: E402
from keras_sf2f.models import face_preprocessing as fp  # noqa: E402
from keras_sf2f.models import state_dict as sd  # noqa: E402
from keras_sf2f.models.facenet import (FaceNet, FULL_EMBEDDING_PARAMS,  # noqa: E402
                                       FULL_WITH_VGGFACE2_LOGITS_PARAMS, trainable_parameter_count)
from keras_sf2f.models.facenet_import import (expected_keys, import_facenet,  # noqa: E402
                                              load_facenet_state_dict)

# Keras' own saving code calls np.array() on TF variables (a NumPy 2 deprecation, not ours).
# Slow, and compares with the PyTorch reference: `pytest -m "not slow"` / `-m "not torch"`.
pytestmark = [pytest.mark.slow, pytest.mark.torch]

TOL = 1e-4
# Full-size deep features (|x| ~23) and training-mode BatchNorm: measured 1.4-4.2e-5 and 3.5-7.9e-5
# (oneDNN and Eigen alike), only 1.3-2.4x under TOL; a wrong mapping or BN mode is off by O(1).
DEEP_TOL = 5e-4
SMALL = dict(width_multiplier=0.25, repeats=(1, 2, 1), embedding_dim=128)


def nchw_to_nhwc(t):
    return t.detach().permute(0, 2, 3, 1).numpy()


def torch_reference_preprocess(images_nhwc):
    """The reference chain written with torch ops (denormalise, standardise, VGG-box crop,
    resize), as the oracle."""
    x = torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (x * std + mean).mul(255).clamp(0, 255)
    x = (x - 127.5) / 128.0
    _, _, h, w = x.shape
    left, top, right, bottom = 0.235, 0.195, 0.765, 0.915
    x = x[:, :, int(top * h):int(bottom * h) + 1, int(left * w):int(right * w) + 1]
    return F.interpolate(x, size=(140, 140), mode="bilinear", align_corners=True)


@pytest.fixture(scope="module")
def full_pair(tmp_path_factory):
    """(torch model, Keras model imported from the saved .pt file), VGGFace2-shaped (8631)."""
    torch.manual_seed(0)
    tmodel = randomize_(TorchInceptionResnetV1(num_classes=8631), seed=1).eval()
    path = str(tmp_path_factory.mktemp("facenet") / "20180402-114759-vggface2.pt")
    torch.save(tmodel.state_dict(), path)
    kmodel = import_facenet(path)
    return tmodel, kmodel


@pytest.fixture(scope="module")
def small_pair():
    tmodel = randomize_(TorchInceptionResnetV1(num_classes=10, **SMALL), seed=2).eval()
    kmodel = FaceNet(num_classes=10, **SMALL)
    kmodel.build((None, 140, 140, 3))
    load_facenet_state_dict(kmodel, tmodel.state_dict())
    return tmodel, kmodel


def _compare(tmodel, kmodel, x_nhwc, training=False):
    with torch.no_grad():
        ref = tmodel.hidden_states(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2))
    got = kmodel.features(tf.constant(x_nhwc), training=training)
    diffs = {}
    for i, name in enumerate(("repeat_1", "repeat_2", "repeat_3")):
        expected = nchw_to_nhwc(ref[i])
        assert got[name].shape == expected.shape, name
        diffs[name] = float(np.max(np.abs(got[name].numpy() - expected)))
    diffs["embedding"] = float(np.max(np.abs(got["embedding"].numpy() - ref[3].numpy())))
    if ref[4] is not None:
        diffs["logits"] = float(np.max(np.abs(got["logits"].numpy() - ref[4].numpy())))
    return diffs


# --- structure -------------------------------------------------------------------------------

def test_full_parameter_counts_match_spec(full_pair):
    _, kmodel = full_pair
    assert trainable_parameter_count(kmodel) == FULL_WITH_VGGFACE2_LOGITS_PARAMS == 27_910_327
    logits = sum(int(np.prod(w.shape)) for w in kmodel.logits.trainable_weights)
    assert logits == 512 * 8631 + 8631
    assert trainable_parameter_count(kmodel) - logits == FULL_EMBEDDING_PARAMS == 23_482_624
    # 2 BN moving statistics per trainable BN channel pair are extra, non-trainable weights.
    assert len(expected_keys(kmodel)) == len([k for k in full_pair[0].state_dict()
                                               if not k.endswith("num_batches_tracked")])


def test_small_variant_counts_and_shapes():
    model = FaceNet.small()
    model.build((None, 140, 140, 3))
    assert trainable_parameter_count(model) == 706_880
    hs = model.hidden_states(tf.zeros((2, 140, 140, 3)))
    assert [tuple(h.shape) for h in hs] == [(2, 15, 15, 64), (2, 7, 7, 224), (2, 3, 3, 448),
                                            (2, 128)]


def test_config_round_trip_without_building():
    model = FaceNet(num_classes=8631)
    config = model.get_config()
    clone = FaceNet.from_config(config)
    assert clone.get_config() == config
    assert config["repeats"] == [5, 10, 5] and config["embedding_dim"] == 512


def test_keras_file_round_trip_identical_outputs(small_pair, tmp_path):
    _, kmodel = small_pair
    x = np.random.RandomState(3).randn(2, 140, 140, 3).astype("float32")
    path = str(tmp_path / "small.keras")
    kmodel.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, FaceNet) and loaded.get_config() == kmodel.get_config()
    a, b = kmodel.hidden_states(x), loaded.hidden_states(x)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u.numpy(), v.numpy())
    np.testing.assert_array_equal(kmodel.features(x)["logits"], loaded.features(x)["logits"])
    np.testing.assert_array_equal(kmodel(x), a[3])
    assert len(kmodel(x, return_hidden_states=True)) == 4


# --- pre-processing ----------------------------------------------------------------------------

@pytest.mark.parametrize("size,rows,cols", [(64, (12, 58), (15, 48)), (128, (24, 117), (30, 97))])
def test_crop_vgg_box_indices(size, rows, cols):
    assert fp.vgg_box_bounds(size, size) == rows + cols
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    img = np.stack([r, c, r * 1000 + c], -1)[None].astype("float32")
    for crop in (fp.crop_vgg_box(img),
                 tf.function(fp.crop_vgg_box, input_signature=[
                     tf.TensorSpec([None, None, None, 3])])(img)):
        crop = crop.numpy()
        assert crop.shape == (1, rows[1] - rows[0] + 1, cols[1] - cols[0] + 1, 3)
        assert crop[0, 0, 0, 2] == rows[0] * 1000 + cols[0]
        assert crop[0, -1, -1, 2] == rows[1] * 1000 + cols[1]
    assert crop.shape[1:3] == ((47, 34) if size == 64 else (94, 68))


@pytest.mark.parametrize("in_hw,out_hw", [((47, 34), (140, 140)), ((94, 68), (140, 140)),
                                          ((9, 13), (5, 4)), ((64, 64), (224, 224))])
def test_resize_matches_torch_align_corners(in_hw, out_hw):
    x = np.random.RandomState(4).randn(2, *in_hw, 3).astype("float32")
    expected = nchw_to_nhwc(F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2),
                                          size=out_hw, mode="bilinear", align_corners=True))
    got = fp.resize_bilinear_align_corners(x, out_hw).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    # also under tf.function with unknown spatial dims
    f = tf.function(lambda t: fp.resize_bilinear_align_corners(t, out_hw),
                    input_signature=[tf.TensorSpec([None, None, None, 3])])
    np.testing.assert_allclose(f(x).numpy(), expected, atol=1e-5, rtol=0)


def test_denormalize_and_standardize_hand_values():
    # pixel = clip((x*std+mean)*255): x=0 -> mean*255; large x clips to 255, small to 0.
    x = np.zeros((1, 1, 3, 3), "float32")
    x[0, 0, 1] = 10.0
    x[0, 0, 2] = -10.0
    x[0, 0, 0] = [1.0, -1.0, 0.5]
    got = ir.normalized_to_pixels(x).numpy()[0, 0]
    np.testing.assert_allclose(got[0], [(0.229 + 0.485) * 255, (0.456 - 0.224) * 255,
                                        (0.5 * 0.225 + 0.406) * 255], rtol=1e-6)
    np.testing.assert_array_equal(got[1], [255, 255, 255])
    np.testing.assert_array_equal(got[2], [0, 0, 0])
    np.testing.assert_allclose(fp.fixed_image_standardization(
        np.array([0.0, 127.5, 255.0], "float32")).numpy(), [-127.5 / 128, 0.0, 127.5 / 128])
    std = ir.normalized_to_pixels(np.full((1, 1, 1, 3), 1.0, "float32"), "standard").numpy()
    np.testing.assert_allclose(std, np.full((1, 1, 1, 3), 255.0))
    with pytest.raises(ValueError):
        ir.normalized_to_pixels(x, "bogus")


def test_preprocessing_gradient_and_saved_model(tmp_path):
    x = tf.Variable(np.random.RandomState(5).randn(2, 64, 64, 3).astype("float32") * 3)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(fp.facenet_inputs_from_generator_images(x))
    g = tape.gradient(y, x).numpy()
    pixels = (x.numpy() * np.array(ir.IMAGENET_STD) + np.array(ir.IMAGENET_MEAN)) * 255
    clipped = (pixels < 0) | (pixels > 255)
    assert np.all(g[clipped] == 0) and np.any(g[~clipped] != 0)
    module = tf.Module()
    module.f = tf.function(fp.facenet_inputs_from_generator_images,
                           input_signature=[tf.TensorSpec([None, 64, 64, 3])])
    tf.saved_model.save(module, str(tmp_path / "pre"))
    restored = tf.saved_model.load(str(tmp_path / "pre"))
    np.testing.assert_array_equal(restored.f(x).numpy(),
                                  fp.facenet_inputs_from_generator_images(x).numpy())


# --- parity ------------------------------------------------------------------------------------

def test_full_parity_140(full_pair):
    tmodel, kmodel = full_pair
    x = np.random.RandomState(6).randn(2, 140, 140, 3).astype("float32")
    diffs = _compare(tmodel, kmodel, x)
    print("full parity max abs diffs:", diffs)
    assert kmodel.features(x)["repeat_1"].shape == (2, 15, 15, 256)
    assert kmodel.features(x)["repeat_2"].shape == (2, 7, 7, 896)
    assert kmodel.features(x)["repeat_3"].shape == (2, 3, 3, 1792)
    assert all(v < DEEP_TOL for k, v in diffs.items() if k != "logits"), diffs
    assert diffs["embedding"] < TOL, diffs  # unit vectors: measured 1.2e-7
    assert diffs["logits"] < 10 * TOL  # logits are O(50) here; relative error ~1e-6


@pytest.mark.parametrize("size", [64, 128])
def test_full_parity_through_preprocessing(full_pair, size):
    tmodel, kmodel = full_pair
    imgs = np.random.RandomState(size).randn(2, size, size, 3).astype("float32") * 1.2
    ref_in = torch_reference_preprocess(imgs)
    ours = fp.facenet_inputs_from_generator_images(imgs).numpy()
    np.testing.assert_allclose(ours, nchw_to_nhwc(ref_in), atol=1e-5, rtol=0)
    with torch.no_grad():
        ref = tmodel.hidden_states(ref_in)
    got = kmodel.hidden_states(tf.constant(ours))
    diffs = [float(np.max(np.abs(got[i].numpy() - nchw_to_nhwc(ref[i])))) for i in range(3)]
    diffs.append(float(np.max(np.abs(got[3].numpy() - ref[3].numpy()))))
    print(f"parity from {size}x{size} generator images:", diffs)
    assert max(diffs) < TOL, diffs


def test_small_parity_eval_and_training_mode():
    # eval mode on the imported small model, and training-mode BN (batch statistics), dropout 0
    tmodel = randomize_(TorchInceptionResnetV1(num_classes=10, dropout=0.0, **SMALL), seed=7)
    kmodel = FaceNet(num_classes=10, dropout_rate=0.0, **SMALL)
    kmodel.build((None, 140, 140, 3))
    load_facenet_state_dict(kmodel, tmodel.state_dict())
    x = np.random.RandomState(8).randn(4, 140, 140, 3).astype("float32")
    assert max(_compare(tmodel.eval(), kmodel, x).values()) < TOL  # measured 1.5e-5
    assert max(_compare(tmodel.train(), kmodel, x, training=True).values()) < DEEP_TOL


# --- importer errors ------------------------------------------------------------------------

def test_import_errors_name_keys_and_leave_model_untouched(small_pair, tmp_path):
    tmodel, _ = small_pair
    model = FaceNet(num_classes=10, **SMALL)
    model.build((None, 140, 140, 3))
    before = model.conv2d_1a.conv.kernel.numpy().copy()
    state = dict(tmodel.state_dict())
    del state["repeat_2.1.branch1.2.bn.running_var"]
    state["repeat_2.7.conv2d.weight"] = torch.zeros(1)
    with pytest.raises(sd.StateDictError) as err:
        load_facenet_state_dict(model, state)
    msg = str(err.value)
    assert "missing keys (1): repeat_2.1.branch1.2.bn.running_var" in msg
    assert "unexpected keys (1): repeat_2.7.conv2d.weight" in msg
    # a full-size state dict into the small model: shape error naming the key
    bad = dict(tmodel.state_dict())
    bad["conv2d_1a.conv.weight"] = torch.zeros(32, 3, 3, 3)
    with pytest.raises(sd.StateDictError, match=r"conv2d_1a\.conv\.weight has shape"):
        load_facenet_state_dict(model, bad)
    np.testing.assert_array_equal(model.conv2d_1a.conv.kernel.numpy(), before)
    with pytest.raises(FileNotFoundError):
        import_facenet(str(tmp_path / "missing.pt"))
    not_a_checkpoint = tmp_path / "junk.pt"
    not_a_checkpoint.write_bytes(b"not a torch file")
    with pytest.raises(sd.StateDictError):
        import_facenet(str(not_a_checkpoint))


def test_cli_imports_split_files(small_pair, tmp_path):
    """export/import_facenet_weights.py with SF2F's two-file layout (features + logits)."""
    from keras_sf2f.cli import import_facenet_weights as cli

    tmodel, kmodel = small_pair
    state = tmodel.state_dict()
    feats, logits = str(tmp_path / "features.pt"), str(tmp_path / "logits.pt")
    torch.save({k: v for k, v in state.items() if not k.startswith("logits.")}, feats)
    torch.save({k: v for k, v in state.items() if k.startswith("logits.")}, logits)
    out = str(tmp_path / "out" / "facenet.weights.h5")
    cli.FLAGS.unparse_flags()
    cli.FLAGS(["import_facenet_weights", f"--state_dict={feats},{logits}", f"--output={out}"])
    try:
        assert cli.main([]) == 0
        cli.FLAGS.state_dict = [str(tmp_path / "absent.pt")]
        assert cli.main([]) == 1  # a missing file is an error message, not a traceback
    finally:
        cli.FLAGS.unparse_flags()
    reloaded = FaceNet(num_classes=10, **SMALL)
    reloaded.build((None, 140, 140, 3))
    reloaded.load_weights(out)
    x = np.random.RandomState(9).randn(1, 140, 140, 3).astype("float32")
    np.testing.assert_array_equal(reloaded.features(x)["logits"], kmodel.features(x)["logits"])
