"""VGGFace2 ResNet-50 in Keras: parameter count, ceil-mode max-pool, restricted pickle loading
and numerical parity with an independent PyTorch definition (tests/torch_vggface_resnet.py)."""

import os
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from torch_facenet import randomize_  # noqa: E402
from torch_vggface_resnet import TorchVGGFaceResNet50, calibrate_bn_  # noqa: E402

from keras_sf2f.models import state_dict as sd  # noqa: E402
from keras_sf2f.models.facenet import trainable_parameter_count  # noqa: E402
from keras_sf2f.models.vggface_resnet import (REFERENCE_MEAN, RESNET50_PARAMS,  # noqa: E402
                                              RESNET50_TRUNK_PARAMS, CeilMaxPool2D,
                                              VGGFaceResNet50, import_vggface_resnet50,
                                              load_numpy_pickle, load_vggface_state_dict,
                                              vggface_inputs)

# Slow, and compares with the PyTorch reference: `pytest -m "not slow"` / `-m "not torch"`.
pytestmark = [pytest.mark.slow, pytest.mark.torch]


class _Py2StylePickler(pickle.Pickler):
    """Writes array buffers as (latin1-decoded) text, as a Python 2 pickle read with
    ``encoding='latin1'`` presents them."""

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            fn, args, state = obj.__reduce__()
            return fn, args, state[:4] + (state[4].decode("latin1"),)
        return NotImplemented


def _pixels(seed, n):
    return np.random.RandomState(seed).uniform(0, 255, (n, 224, 224, 3)).astype("float32")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmodel = randomize_(TorchVGGFaceResNet50(), seed=3)
    calib = vggface_inputs(_pixels(0, 2)).numpy()
    calibrate_bn_(tmodel, torch.from_numpy(calib).permute(0, 3, 1, 2))
    state = {k: v.numpy() for k, v in tmodel.state_dict().items()
             if not k.endswith("num_batches_tracked")}  # the Caffe conversion has none
    path = str(tmp_path_factory.mktemp("vgg") / "resnet50_ft_weight.pkl")
    with open(path, "wb") as f:
        _Py2StylePickler(f, protocol=2).dump(state)
    return tmodel, import_vggface_resnet50(path)


def test_parameter_count(pair):
    _, model = pair
    assert trainable_parameter_count(model) == RESNET50_PARAMS == 41_192_951
    fc = sum(int(np.prod(w.shape)) for w in model.fc.trainable_weights)
    assert trainable_parameter_count(model) - fc == RESNET50_TRUNK_PARAMS
    assert VGGFaceResNet50.from_config(model.get_config()).get_config() == model.get_config()


def test_parity_logits(pair):
    tmodel, model = pair
    x = vggface_inputs(_pixels(1, 2)).numpy()
    with torch.no_grad():
        ref = tmodel(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    got = model(x).numpy()
    diff = float(np.max(np.abs(got - ref)))
    print("VGGFace ResNet-50 logits max abs diff:", diff, "max |logit|:", np.abs(ref).max())
    assert diff < 1e-3 and diff / np.abs(ref).max() < 1e-4


@pytest.mark.parametrize("size", [7, 8, 112, 113, 55])
def test_ceil_mode_max_pool_matches_torch(size):
    x = np.random.RandomState(size).randn(2, size, size + 3, 4).astype("float32")
    ref = F.max_pool2d(torch.from_numpy(x).permute(0, 3, 1, 2), 3, 2, ceil_mode=True)
    got = CeilMaxPool2D(3, 2)(x).numpy()
    np.testing.assert_array_equal(got, ref.permute(0, 2, 3, 1).numpy())


def test_inputs_mean_and_resize():
    pixels = _pixels(2, 1)[:, :64, :48]
    got = vggface_inputs(pixels).numpy()
    centred = torch.from_numpy(pixels - np.array(REFERENCE_MEAN, "float32")).permute(0, 3, 1, 2)
    ref = F.interpolate(centred, size=(224, 224), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(got, ref.permute(0, 2, 3, 1).numpy(), atol=1e-4, rtol=0)
    bgr = vggface_inputs(pixels, channel_order="bgr").numpy()
    np.testing.assert_allclose(bgr[0, 0, 0], pixels[0, 0, 0, ::-1] - REFERENCE_MEAN[::-1],
                               atol=1e-4)


def test_restricted_unpickler(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.int64(3) * np.ones(2)}
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        p = tmp_path / f"ok{protocol}.pkl"
        p.write_bytes(pickle.dumps(arrays, protocol=protocol))
        got = load_numpy_pickle(str(p))
        assert set(got) == {"a", "b"}
        np.testing.assert_array_equal(got["a"], arrays["a"])

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())  # harmless, but a call: must be refused before it runs

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(sd.StateDictError, match=r"refusing to load global .*getcwd"):
        load_numpy_pickle(str(bad))
    obj = tmp_path / "objects.pkl"
    obj.write_bytes(pickle.dumps({"w": np.array([{"x": 1}], dtype=object)}))
    with pytest.raises(sd.StateDictError):
        load_numpy_pickle(str(obj))
    not_dict = tmp_path / "list.pkl"
    not_dict.write_bytes(pickle.dumps([np.zeros(2)]))
    with pytest.raises(sd.StateDictError, match="expected a dict"):
        load_numpy_pickle(str(not_dict))
    with pytest.raises(FileNotFoundError):
        import_vggface_resnet50(str(tmp_path / "missing.pkl"))


def test_key_mismatch_is_reported(pair):
    tmodel, model = pair
    state = {k: v for k, v in tmodel.state_dict().items() if k != "layer3.5.bn2.running_var"}
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(sd.StateDictError) as err:
        load_vggface_state_dict(model, state)
    assert "layer3.5.bn2.running_var" in str(err.value)
    assert "layer5.0.conv1.weight" in str(err.value)
