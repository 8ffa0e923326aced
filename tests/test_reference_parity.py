"""Parity with the PyTorch reference architecture, through the checkpoint importer.

PyTorch versions of the reference modules (tests/torch_reference.py) get random weights and
non-trivial BatchNorm statistics, are saved as a checkpoint dict shaped like the reference's
(``model_state``, ``d_img_state_<i>``, ``d_ac_state_<i>``, optimiser states, counters), imported
with keras_sf2f.models.reference_import, and compared in eval mode on the same inputs.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensorflow as tf  # noqa: E402

import torch_reference as ref  # noqa: E402
from keras_sf2f.cli import import_reference_checkpoint as import_command  # noqa: E402
from keras_sf2f.models import builder, reference_import  # noqa: E402
from keras_sf2f.models.state_dict import StateDictError  # noqa: E402

# Slow, and compares with the PyTorch reference: `pytest -m "not slow"` / `-m "not torch"`.
pytestmark = [pytest.mark.slow, pytest.mark.torch]
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4
NUM_IDS = 11
ARCH_64 = "C4-64-2,C4-128-2,C4-256-2"
ARCH_128 = "C4-64-2,C4-128-2,C4-256-2,C4-512-2"
V2F_AC_ARCH = "C1-32-1-0,C4-64-2-1,C4-128-2-1,C4-256-2-1,C4-512-1-0"

CONFIGS = {
    "sf2f_64": dict(num_train_identities=NUM_IDS),
    "sf2f_128_fuser": dict(
        fuser="attention", decoder="upconv_multires", image_size=128,
        image_discriminator_arch_128=ARCH_128, identity_classifier_arch_128=ARCH_128,
        num_train_identities=NUM_IDS),
    # The baseline's embedding noise is random by design; parity is checked without it.
    "voice2face": dict(
        encoder="cnn", decoder="deconv_64", image_discriminator_arch_64="",
        identity_classifier_arch_64=V2F_AC_ARCH, discriminator_normalization_64="none",
        discriminator_activation_64="leakyrelu-0.2", num_train_identities=NUM_IDS),
}


def _build_reference(config: builder.ModelConfig, seed: int):
    """Reference-structured torch modules with random weights and warmed-up BN statistics."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    fuser = config.fuser == "attention"
    encoder = ref.VoiceEncoderRef(inception=config.encoder == "inception", fuser=fuser)
    if config.decoder == "deconv_64":
        decoder = ref.DeconvDecoderRef()
    else:
        decoder = ref.UpsamplingDecoderRef(multires=config.decoder == "upconv_multires")
    generator = ref.GeneratorRef(encoder, decoder)
    ref.randomize_batch_norms(generator, rng)

    def mels():
        shape = (2, 3, 40, 125) if fuser else (4, 40, 125)
        return torch.randn(*shape, generator=rng)
    ref.warm_up_batch_norms(generator, mels)

    image_ds, ac_ds = [], []
    for resolution in (64, 128):
        slope = float(getattr(config, f"discriminator_activation_{resolution}").split("-")[1])
        norm = getattr(config, f"discriminator_normalization_{resolution}")
        arch = config.discriminator_arch("image_discriminator", resolution)
        images = lambda: torch.randn(4, 3, resolution, resolution, generator=rng)  # noqa: E731
        if arch:
            model = ref.PatchDiscriminatorRef(arch, norm, slope)
            ref.randomize_batch_norms(model, rng)
            ref.warm_up_batch_norms(model, images)
            image_ds.append(model)
        arch = config.discriminator_arch("identity_classifier", resolution)
        if arch:
            model = ref.AcDiscriminatorRef(arch, NUM_IDS, norm, slope)
            ref.randomize_batch_norms(model, rng)
            ref.warm_up_batch_norms(model, images)
            ac_ds.append(model)
    return generator, image_ds, ac_ds


def _reference_checkpoint(generator, image_ds, ac_ds) -> dict:
    """A dict shaped like the one the reference train.py saves."""
    checkpoint = {
        "model_state": generator.state_dict(),
        "optim_state": torch.optim.Adam(generator.parameters(), lr=5e-4).state_dict(),
        "counters": {"t": 1234, "epoch": 7, "best_L1": 0.5},
        "d_img_state": None,
        "d_ac_state": None,
    }
    for index, model in enumerate(image_ds):
        checkpoint[f"d_img_state_{index}"] = model.state_dict()
        checkpoint[f"d_img_optim_state_{index}"] = torch.optim.Adam(model.parameters()).state_dict()
    for index, model in enumerate(ac_ds):
        checkpoint[f"d_ac_state_{index}"] = model.state_dict()
        checkpoint[f"d_ac_optim_state_{index}"] = torch.optim.Adam(model.parameters()).state_dict()
    return checkpoint


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
    """name -> dict(config, torch modules, checkpoint path and dict, imported Keras models)."""
    out = {}
    for seed, (name, overrides) in enumerate(CONFIGS.items()):
        config = builder.ModelConfig(**overrides).validate()
        generator, image_ds, ac_ds = _build_reference(config, seed)
        checkpoint = _reference_checkpoint(generator, image_ds, ac_ds)
        path = str(tmp_path_factory.mktemp(name) / "checkpoint_with_model.pt")
        torch.save(checkpoint, path)
        models, info = reference_import.import_reference_checkpoint(path, config)
        out[name] = dict(config=config, generator=generator, image_ds=image_ds, ac_ds=ac_ds,
                         path=path, checkpoint=checkpoint, models=models, info=info)
    return out


def _max_diff(keras_value, torch_value, nchw=False):
    torch_value = torch_value.detach().numpy()
    if nchw:
        torch_value = np.transpose(torch_value, (0, 2, 3, 1))
    keras_value = np.asarray(keras_value)
    assert keras_value.shape == torch_value.shape
    return float(np.max(np.abs(keras_value - torch_value)))


def _report(label, diff):
    print(f"parity {label}: max abs diff {diff:.3g}")
    assert diff < TOLERANCE, f"{label}: max abs diff {diff} >= {TOLERANCE}"


@pytest.mark.parametrize("name", ["sf2f_128_fuser", "voice2face"])
def test_encoder_parity_over_lengths(setups, name):
    setup = setups[name]
    rng = np.random.default_rng(0)
    for length in (100, 125, 128, 150):
        mels = rng.standard_normal((3, 40, length)).astype(np.float32)
        with torch.no_grad():
            expected = setup["generator"].encoder(torch.from_numpy(mels))
        got = setup["models"].generator.encoder(np.transpose(mels, (0, 2, 1)), training=False)
        _report(f"{name} encoder L={length}", _max_diff(got, expected))
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("segments", [1, 5])
def test_fused_generator_parity(setups, segments):
    setup = setups["sf2f_128_fuser"]
    mels = np.random.default_rng(segments).standard_normal(
        (2, segments, 40, 125)).astype(np.float32)
    with torch.no_grad():
        (expected_64, expected_128), expected_embedding = setup["generator"](
            torch.from_numpy(mels))
    images, embedding = setup["models"].generator(np.transpose(mels, (0, 1, 3, 2)),
                                                  training=False)
    _report(f"fused embedding N={segments}", _max_diff(embedding, expected_embedding))
    _report(f"fused image 64 N={segments}", _max_diff(images[0], expected_64, nchw=True))
    _report(f"fused image 128 N={segments}", _max_diff(images[1], expected_128, nchw=True))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_decoder_parity(setups, name):
    setup = setups[name]
    embeddings = np.random.default_rng(1).standard_normal((3, 512)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    with torch.no_grad():
        expected = setup["generator"].decoder(torch.from_numpy(embeddings)[:, :, None, None])
    got = setup["models"].generator.decoder(embeddings, training=False)
    if not isinstance(expected, tuple):
        expected, got = (expected,), [got]
    for resolution, got_images, expected_images in zip(
            setup["config"].output_resolutions, got, expected):
        _report(f"{name} decoder {resolution}px",
                _max_diff(got_images, expected_images, nchw=True))


def test_stage1_generator_end_to_end_parity(setups):
    setup = setups["sf2f_64"]
    mels = np.random.default_rng(2).standard_normal((2, 40, 131)).astype(np.float32)
    with torch.no_grad():
        expected_images, expected_embedding = setup["generator"](torch.from_numpy(mels))
    images, embedding = setup["models"].generator(np.transpose(mels, (0, 2, 1)), training=False)
    assert len(images) == 1
    _report("sf2f_64 generator embedding", _max_diff(embedding, expected_embedding))
    _report("sf2f_64 generator image", _max_diff(images[0], expected_images, nchw=True))


@pytest.mark.parametrize("name", ["sf2f_128_fuser", "voice2face"])
def test_discriminator_parity(setups, name):
    setup = setups[name]
    models = setup["models"]
    rng = np.random.default_rng(3)
    for torch_d, keras_d in zip(setup["image_ds"], models.image_discriminators):
        size = keras_d.image_size
        images = rng.standard_normal((3, 3, size, size)).astype(np.float32)
        with torch.no_grad():
            expected = torch_d(torch.from_numpy(images))
        got = keras_d(np.transpose(images, (0, 2, 3, 1)), training=False)
        _report(f"{keras_d.name} logits", _max_diff(got, expected, nchw=True))
    for torch_d, keras_d in zip(setup["ac_ds"], models.identity_classifiers):
        size = keras_d.image_size
        images = rng.standard_normal((3, 3, size, size)).astype(np.float32)
        with torch.no_grad():
            expected_real, expected_id = torch_d(torch.from_numpy(images))
        real, identity = keras_d(np.transpose(images, (0, 2, 3, 1)), training=False)
        _report(f"{keras_d.name} real logits", _max_diff(real, expected_real))
        _report(f"{keras_d.name} identity logits", _max_diff(identity, expected_id))
    expected_count = {"sf2f_128_fuser": (2, 2), "voice2face": (0, 1)}[name]
    assert (len(models.image_discriminators), len(models.identity_classifiers)) == expected_count


def test_import_reports_counters_and_counts(setups):
    info = setups["sf2f_128_fuser"]["info"]
    assert info["reference_counters"]["t"] == 1234
    assert info["skipped_keys"] == []
    assert info["parameter_counts"]["generator"] == 17_212_358


def test_mismatched_keys_are_named(setups):
    setup = setups["sf2f_64"]
    state = dict(setup["checkpoint"]["model_state"])
    state["decoder.fc.9.weight"] = state.pop("decoder.fc.0.weight")
    broken = dict(setup["checkpoint"], model_state=state)
    with pytest.raises(StateDictError) as error:
        reference_import.import_reference_state(setup["models"], broken)
    message = str(error.value)
    assert "missing keys (1): decoder.fc.0.weight" in message
    assert "unexpected keys (1): decoder.fc.9.weight" in message


def test_wrong_discriminator_layout_is_explained(setups):
    # A 64px checkpoint (one D of each kind) against the 128 configuration (two of each).
    with pytest.raises(StateDictError, match=r"d_img_state_1"):
        reference_import.import_reference_state(setups["sf2f_128_fuser"]["models"],
                                                setups["sf2f_64"]["checkpoint"])


def test_stage1_checkpoint_into_fuser_configuration(setups):
    config = builder.ModelConfig(fuser="attention", num_train_identities=NUM_IDS + 1)
    models = builder.build_models(config)
    checkpoint = setups["sf2f_64"]["checkpoint"]
    with pytest.raises(StateDictError, match=r"encoder\.attn_fuser\.attention\.linear_in"):
        reference_import.import_reference_state(models, checkpoint)
    # With the fuser allowed to stay fresh, the next problem is the identity count, with a hint.
    with pytest.raises(StateDictError, match=r"--num_train_identities=11"):
        reference_import.import_reference_state(models, checkpoint, allow_missing_fuser=True)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        reference_import.import_reference_checkpoint(str(tmp_path / "nope.pt"),
                                                     builder.ModelConfig())


def _run(args):
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


def test_import_command_writes_a_restorable_checkpoint(setups, tmp_path):
    # In-process (the script's main with parsed flags) to spare a TensorFlow start-up; the
    # describe test below runs a command as a real subprocess.
    setup = setups["sf2f_64"]
    output_dir = tmp_path / "imported"
    command = import_command
    FLAGS = command.FLAGS
    FLAGS.unparse_flags()
    try:
        FLAGS(["import_reference_checkpoint", f"--reference_checkpoint={setup['path']}",
               f"--flagfile={os.path.join(REPO_ROOT, 'configs', 'sf2f_64.cfg')}",
               f"--num_train_identities={NUM_IDS}", f"--output_dir={output_dir}"])
        assert command.main(["import_reference_checkpoint"]) == 0
        # A second import into the same directory is refused, with a message, not a traceback.
        assert command.main(["import_reference_checkpoint"]) == 1
    finally:
        FLAGS.unparse_flags()
    flags_text = (output_dir / "flags.cfg").read_text()
    assert "--decoder=upconv_64" in flags_text and f"--num_train_identities={NUM_IDS}" in flags_text
    info = json.loads((output_dir / "reference_import.json").read_text())
    assert info["reference_counters"]["epoch"] == 7
    path = tf.train.latest_checkpoint(str(output_dir))
    assert path and path.endswith("ckpt-1234")

    # Restore into fresh models under the documented names; every weight must come back.
    fresh = builder.build_models(setup["config"])
    objects = builder.checkpoint_objects(fresh)
    assert sorted(objects) == ["generator", "identity_classifier_64", "image_discriminator_64"]
    tf.train.Checkpoint(**objects).restore(path).assert_consumed()
    imported = builder.checkpoint_objects(setup["models"])
    for name, model in objects.items():
        for restored, expected in zip(model.weights, imported[name].weights):
            np.testing.assert_array_equal(np.asarray(restored), np.asarray(expected))


def test_describe_command_json_counts():
    result = _run(["trainers/describe_model.py", "--flagfile=configs/sf2f_128_fuser.cfg",
                   "--json"])
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads(result.stdout)
    assert counts == {
        "generator": 17_212_358, "voice_encoder": 4_848_192, "fuser": 786_432,
        "face_decoder": 11_577_734,
        "image_discriminator_64": 659_521, "image_discriminator_128": 2_757_953,
        "identity_classifier_64": 923_457 + 1025 * 2890,
        "identity_classifier_128": 3_283_777 + 1025 * 2890,
    }
