"""Reference checkpoints as people share them: stripped to the generator.

The official PyTorch code's ``scripts/strip_checkpoint.py`` keeps ``args``, ``model_state`` and
``model_kwargs`` of the dict its train.py saves (and, with its default
``--keep_discriminators=1``, also ``d_img_state`` / ``d_img_kwargs`` / ``d_obj_*`` -- the bare,
always-None ``d_img_state`` and the kwargs, never the ``d_*_state_<i>`` states). Here a tiny
reference-structured model (tests/torch_reference.py) is saved the way the reference's train.py
saves it, stripped by that rule, and imported: for evaluation and export, with the
discriminators left fresh and said so.
"""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tensorflow as tf  # noqa: E402

import torch_reference as ref  # noqa: E402

# Compares with the PyTorch reference: `pytest -m "not torch"` leaves it out.
pytestmark = pytest.mark.torch
from keras_sf2f.cli import import_reference_checkpoint as import_command  # noqa: E402
from keras_sf2f.models import builder, reference_import  # noqa: E402
from keras_sf2f.models.state_dict import StateDictError  # noqa: E402
from keras_sf2f.training import loop  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_IDS = 5
ARCH = "C4-4-2,C4-8-2"
CHANNELS = (16, 16, 16, 16)
DIM = 32
# The keras-sf2f flags of the tiny stage-2 (fuser) model below.
MODEL_FLAGS = dict(encoder="inception", encoder_channels=CHANNELS, embedding_dim=DIM,
                   fuser="attention", decoder="upconv_64",
                   image_discriminator_arch_64=ARCH, identity_classifier_arch_64=ARCH,
                   num_train_identities=NUM_IDS)


def _reference_train_checkpoint(seed=0) -> tuple:
    """(generator, full checkpoint dict) shaped as the reference's train.py saves a stage-2
    (``--train_fuser_only``) run: every key of its initial dict, the per-discriminator states
    and optimiser states, counters."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    generator = ref.GeneratorRef(
        ref.VoiceEncoderRef(inception=True, channels=CHANNELS, dim=DIM, fuser=True),
        ref.UpsamplingDecoderRef(dim=DIM))
    ref.randomize_batch_norms(generator, rng)
    ref.warm_up_batch_norms(generator, lambda: torch.randn(2, 3, 40, 125, generator=rng))
    patch = ref.PatchDiscriminatorRef(ARCH)
    ac = ref.AcDiscriminatorRef(ARCH, NUM_IDS)
    model_kwargs = {
        "encoder_arch": "V2F1DCNN",
        "encoder_kwargs": {"input_channel": 40, "channels": list(CHANNELS),
                           "output_channel": DIM, "normalize_embedding": True,
                           "inception_mode": True, "segments_fusion": True,
                           "normalize_fusion": True, "fuser_arch": "AttentionFuserV1",
                           "fuser_kwargs": {"dimensions": DIM, "dim_out": DIM,
                                            "attention_type": "general",
                                            "ignore_tanh": True}},
        "decoder_arch": "FaceGanDecoder",
        "decoder_kwargs": {"noise_dim": DIM, "mlp_normalization": "none",
                           "normalization": "batch", "activation": "leakyrelu-0.1"},
        "image_size": [64, 64],
    }
    checkpoint = {
        # argparse values as the reference's train.py stores them (args.__dict__); its
        # --train_fuser_only has no type, so the command line gives a string.
        "args": {"batch_size": 256, "learning_rate": 1e-4, "train_fuser_only": "True",
                 "pretrained_path": "output/sf2f_1st_stage/best_L1_with_model.pt",
                 "path_opts": "options/vox/sf2f/sf2f_fuser.yaml", "face_gen_mode": None,
                 "checkpoint_name": "checkpoint"},
        "options": {"data": {"image_size": [64, 64]}},
        "model_kwargs": model_kwargs,
        "d_img_kwargs": {"normalization": "batch", "padding": "valid",
                         "activation": "leakyrelu-0.1", "arch": ARCH},
        "train_losses": {"L1_pixel_loss": [0.5, 0.4]},
        "checkpoint_ts": [100, 200], "lr": [], "norm_d": [], "norm_g": [],
        "counters": {"t": 200, "epoch": 3, "best_L1": 0.4, "best_recall_10": None},
        "model_state": generator.state_dict(),
        "model_best_state": None,
        "optim_state": torch.optim.Adam(generator.parameters()).state_dict(),
        "d_img_state": None, "d_img_best_state": None, "d_img_optim_state": None,
        "d_ac_state": None, "d_ac_optim_state": None,
        "d_img_state_0": patch.state_dict(),
        "d_img_optim_state_0": torch.optim.Adam(patch.parameters()).state_dict(),
        "d_ac_state_0": ac.state_dict(),
        "d_ac_optim_state_0": torch.optim.Adam(ac.parameters()).state_dict(),
    }
    return generator, checkpoint


def _strip(checkpoint: dict, keep_discriminators: bool) -> dict:
    """The reference's stripping rule: a fixed list of top-level keys survives."""
    keep = ["args", "model_state", "model_kwargs"]
    if keep_discriminators:
        keep += ["d_img_state", "d_img_kwargs", "d_obj_state", "d_obj_kwargs"]
    return {key: value for key, value in checkpoint.items() if key in keep}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    generator, full = _reference_train_checkpoint()
    directory = tmp_path_factory.mktemp("reference")
    paths = {}
    for name, data in (("full", full), ("stripped", _strip(full, False)),
                       ("stripped_keep_d", _strip(full, True))):
        paths[name] = str(directory / f"{name}.pt")
        torch.save(data, paths[name])
        # What the reference's script reads back and re-saves: the file round-trips as is.
        assert set(torch.load(paths[name], weights_only=True)) == set(data)
    assert sorted(_strip(full, False)) == ["args", "model_kwargs", "model_state"]
    assert sorted(_strip(full, True)) == ["args", "d_img_kwargs", "d_img_state",
                                          "model_kwargs", "model_state"]
    return dict(generator=generator, full=full, paths=paths)


def test_what_the_file_holds_is_reported(reference):
    full = reference_import.describe_reference_checkpoint(reference["full"])
    assert full == {"stage": 2, "stage_from": "args.train_fuser_only", "fuser": True,
                    "encoder": "inception", "decoder": "upconv_64", "resolution": 64,
                    "embedding_dim": DIM, "image_discriminators": 1,
                    "identity_classifiers": 1, "identity_classifier_width": NUM_IDS,
                    "generator_only": False}
    for name in ("stripped", "stripped_keep_d"):
        stripped = torch.load(reference["paths"][name], weights_only=True)
        found = reference_import.describe_reference_checkpoint(stripped)
        assert found == dict(full, image_discriminators=0, identity_classifiers=0,
                             identity_classifier_width=None, generator_only=True), name
    line = reference_import.format_found(full)
    assert "stage 2" in line and "attention fuser" in line and "resolution 64" in line
    assert f"identity classifier width {NUM_IDS}" in line
    # Without args the stage is inferred from the fuser weights.
    bare = {"model_state": reference["full"]["model_state"]}
    assert reference_import.describe_reference_checkpoint(bare)["stage_from"] == \
        "fuser weights present"


def test_stripped_checkpoint_imports_for_evaluation_and_export(reference, tmp_path, capsys,
                                                               monkeypatch):
    output_dir = tmp_path / "imported"
    command = import_command
    FLAGS = command.FLAGS
    FLAGS.unparse_flags()
    try:
        FLAGS(["import_reference_checkpoint",
               f"--reference_checkpoint={reference['paths']['stripped']}",
               f"--output_dir={output_dir}", "--encoder=inception",
               f"--encoder_channels={','.join(map(str, CHANNELS))}", f"--embedding_dim={DIM}",
               "--fuser=attention", "--decoder=upconv_64",
               f"--image_discriminator_arch_64={ARCH}", f"--identity_classifier_arch_64={ARCH}",
               f"--num_train_identities={NUM_IDS}"])
        assert command.main(["import_reference_checkpoint"]) == 0
    finally:
        FLAGS.unparse_flags()
    out = capsys.readouterr().out
    # What it found, and that the discriminators stay fresh: each said once.
    assert out.count("found: stage 2") == 1 and "attention fuser" in out
    assert "resolution 64" in out and "no identity classifier in the file" in out
    assert out.count("generator only:") == 1
    assert "image_discriminator_64, identity_classifier_64" in out

    info = json.loads((output_dir / "reference_import.json").read_text())
    assert info["generator_only"] is True
    assert info["fresh_discriminators"] == ["image_discriminator_64", "identity_classifier_64"]
    assert info["found"]["stage"] == 2 and info["found"]["identity_classifier_width"] is None
    assert "Generator only" in (output_dir / "flags.cfg").read_text()
    prefix = tf.train.latest_checkpoint(str(output_dir))
    assert prefix is not None
    # The checkpoint holds the generator alone: nothing pretends to be an imported D.
    assert {name.split("/")[0] for name, _ in tf.train.list_variables(prefix)} <= {
        "generator", "_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter"}

    config = builder.ModelConfig(**MODEL_FLAGS).validate()
    # Evaluation's restore path: the generator comes back and draws what the reference draws.
    generator = builder.build_generator(config)
    loop.restore_models(str(output_dir), {"generator": generator})
    mels = np.random.default_rng(3).standard_normal((2, 3, 40, 125)).astype(np.float32)
    with torch.no_grad():
        expected_image, expected_embedding = reference["generator"](torch.from_numpy(mels))
    images, embedding = generator(np.transpose(mels, (0, 1, 3, 2)), training=False)
    np.testing.assert_allclose(np.asarray(embedding), expected_embedding.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(images[0]),
                               np.transpose(expected_image.numpy(), (0, 2, 3, 1)), atol=1e-4)
    # Export's restore path (every generator variable must be in the checkpoint).
    from keras_sf2f import runs
    exported = runs.restore_generator(config, prefix)
    for a, b in zip(exported.weights, generator.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # Training from the import: one warning naming both discriminators as fresh, and why.
    warnings = []
    monkeypatch.setattr(loop.logging, "warning",
                        lambda message, *args: warnings.append(message % args))
    models = builder.build_models(config)
    loop.restore_models(str(output_dir), builder.checkpoint_objects(models))
    fresh = [w for w in warnings if "fresh" in w]
    assert len(fresh) == 1, warnings
    assert "identity_classifier_64, image_discriminator_64" in fresh[0]
    assert "generator-only reference checkpoint" in fresh[0]


def test_stripped_with_kept_discriminator_keys_imports_too(reference):
    # --keep_discriminators=1 (the script's default) keeps the bare d_img_state, which the
    # reference's train.py leaves None: still generator-only.
    config = builder.ModelConfig(**MODEL_FLAGS)
    models, info = reference_import.import_reference_checkpoint(
        reference["paths"]["stripped_keep_d"], config)
    assert info["generator_only"] and info["skipped_keys"] == []
    expected = reference["full"]["model_state"]["decoder.fc.0.weight"].numpy()
    np.testing.assert_array_equal(np.asarray(models.generator.decoder.fc_dense.kernel),
                                  expected.T)


def test_partial_discriminators_and_wrong_flags_are_refused_with_what_was_found(reference,
                                                                                 tmp_path):
    # Some discriminator states but not all the configuration has: refused, as before.
    partial = {k: v for k, v in reference["full"].items() if k != "d_ac_state_0"}
    path = str(tmp_path / "partial.pt")
    torch.save(partial, path)
    with pytest.raises(StateDictError, match=r"d_ac_state_0") as error:
        reference_import.import_reference_checkpoint(path, builder.ModelConfig(**MODEL_FLAGS))
    assert "the file holds: stage 2" in str(error.value)
    # A stage-1 configuration for the stripped stage-2 file: the fuser keys are named, and what
    # the file holds tells which flags to use.
    with pytest.raises(StateDictError, match=r"attn_fuser") as error:
        reference_import.import_reference_checkpoint(
            reference["paths"]["stripped"], builder.ModelConfig(**dict(MODEL_FLAGS,
                                                                       fuser="none")))
    assert "attention fuser" in str(error.value) and "generator only" in str(error.value)
