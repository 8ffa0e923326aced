"""keras_sf2f.runs: a run's own configuration, flagfiles read as absl reads them, overlays,
checkpoints restored with every value matched both ways, and the resume check."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags as absl_flags

from keras_sf2f import flags as sf2f_flags
from keras_sf2f import runs
from keras_sf2f.models import builder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
# A tiny stage-1 model; STAGE2 adds the attention fuser.
STAGE1 = dict(encoder="cnn", encoder_channels=(8, 8, 8, 8), embedding_dim=16,
              image_discriminator_arch_64="C4-8-2", identity_classifier_arch_64="",
              num_train_identities=3)
STAGE2 = dict(STAGE1, fuser="attention")
STAGE1_FLAGS = """# a tiny run's effective flags
--encoder=cnn
--encoder_channels=8,8,8,8
--embedding_dim=16
--image_discriminator_arch_64=C4-8-2
--identity_classifier_arch_64=
--num_train_identities=3
--data_dir=/somewhere/data
"""


def _write_run(directory, model, flags_text=None, step=7):
    """A run directory: the models of ``model`` saved as training saves them (plus a step
    variable) and, when given, its flags.cfg. Returns (directory, the models)."""
    models = builder.build_models(builder.ModelConfig(**model))
    for i, variable in enumerate(models.generator.weights):
        variable.assign(tf.fill(variable.shape, 0.01 * (i + 1)))
    checkpoint = tf.train.Checkpoint(step=tf.Variable(step, dtype=tf.int64),
                                     **builder.checkpoint_objects(models))
    tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=None).save(
        checkpoint_number=step)
    if flags_text is not None:
        (directory / "flags.cfg").write_text(flags_text)
    return str(directory), models


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    return _write_run(tmp_path_factory.mktemp("stage1"), STAGE1, STAGE1_FLAGS)


@pytest.fixture(scope="module")
def stage2(tmp_path_factory):
    return _write_run(tmp_path_factory.mktemp("stage2"), STAGE2,
                      STAGE1_FLAGS + "--fuser=attention\n--train_fuser_only\n", step=3)


def _same_weights(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(a.weights, b.weights))


# -- a run's own configuration ------------------------------------------------------------------

def test_a_run_is_loaded_with_its_own_configuration(stage2):
    directory, models = stage2
    run = runs.load_run(directory)
    assert run.model_config == builder.ModelConfig(**STAGE2)
    assert run.config_source == os.path.join(directory, "flags.cfg") == run.flags_file
    assert run.checkpoint == os.path.join(directory, "ckpt-3") and run.step == 3
    assert run.flag("data_dir") == "/somewhere/data"
    assert _same_weights(run.restore_generator(), models.generator)
    # A prefix, and a best_<metric>/ sub-directory, belong to the same run.
    assert runs.load_run(run.checkpoint).model_config == run.model_config


def test_best_subdirectory_takes_the_runs_flags(tmp_path):
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "flags.cfg").write_text(STAGE1_FLAGS)
    _write_run(directory / "best_l1", STAGE1)
    run = runs.load_run(str(directory / "best_l1"))
    assert run.config_source == str(directory / "flags.cfg")
    assert run.model_config == builder.ModelConfig(**STAGE1)


def test_train_config_json_when_there_is_no_flagfile(tmp_path):
    directory, _ = _write_run(tmp_path / "run", STAGE1)
    config = builder.ModelConfig(**STAGE1)
    (tmp_path / "run" / "train_config.json").write_text(json.dumps({"model": config.to_dict()}))
    run = runs.load_run(directory)
    assert run.model_config == config and run.config_source.endswith("train_config.json")
    assert run.flags == {} and run.flags_file is None


def test_a_checkpoint_without_configuration_needs_one(tmp_path):
    directory, _ = _write_run(tmp_path / "bare", STAGE1)
    with pytest.raises(runs.RunError, match="has no flags.cfg or train_config.json.*--flagfile"):
        runs.load_run(directory)
    run = runs.load_run(directory, fallback=lambda: builder.ModelConfig(**STAGE1),
                        fallback_source="the test")
    assert run.config_source == "the test" and run.model_config.encoder == "cnn"


def test_given_model_flags_must_agree_with_the_run(stage2):
    directory, _ = stage2
    agreeing = {"fuser": "attention", "embedding_dim": 16, "encoder_channels": ["8"] * 4}
    assert runs.load_run(directory, given=agreeing).model_config.fuser == "attention"
    with pytest.raises(runs.RunError) as error:
        runs.load_run(directory, given={"fuser": "none", "embedding_dim": 16,
                                        "encoder_add_noise": True})
    message = str(error.value)
    assert "--fuser=none given, the run has --fuser=attention" in message
    assert "--encoder_add_noise given, the run has --noencoder_add_noise" in message
    assert "embedding_dim" not in message  # it agrees
    assert os.path.join(directory, "flags.cfg") in message


def test_the_command_line_of_a_tool_is_checked_against_the_run(stage2):
    directory, _ = stage2
    argv = ["tool", f"--flagfile={os.path.join(CONFIGS, 'demo.cfg')}",
            f"--checkpoint_dir={directory}"]
    flag_values = _parsed(argv)
    with pytest.raises(runs.RunError, match="--fuser=none given, the run has --fuser=attention"):
        runs.load_run_for_tool(directory, *_model_options(flag_values))
    # No model flags at all: the run's own configuration, nothing to contradict.
    argv = ["tool", f"--checkpoint_dir={directory}"]
    assert runs.load_run_for_tool(directory, *_model_options(_parsed(argv))).model_config == \
        builder.ModelConfig(**STAGE2)


# -- restoring: every value matched both ways ---------------------------------------------------

def test_a_stage2_checkpoint_does_not_restore_into_a_model_without_fuser(stage2):
    directory, _ = stage2
    with pytest.raises(runs.RunError, match="holds values no variable of the model takes: "
                                            "generator/encoder/fuser/"):
        runs.restore_generator(builder.ModelConfig(**STAGE1), directory)
    assert runs.unused_model_values(runs.find_checkpoint(directory), {
        "generator": builder.build_generator(builder.ModelConfig(**STAGE2))}) == []


def test_a_stage1_checkpoint_gives_a_fuser_only_to_training(stage1):
    directory, models = stage1
    with pytest.raises(runs.RunError, match="has no fuser .*--init_checkpoint"):
        runs.restore_generator(builder.ModelConfig(**STAGE2), directory)
    stage2_models = builder.build_models(builder.ModelConfig(**STAGE2))
    runs.restore_models(directory, builder.checkpoint_objects(stage2_models), fresh_fuser=True)
    restored = [w for w in stage2_models.generator.weights if "fuser" not in w.path]
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(restored, models.generator.weights))


def test_a_generator_of_another_shape_is_named(stage1):
    directory, _ = stage1
    with pytest.raises(runs.RunError, match="does not match the model configuration"):
        runs.restore_generator(builder.ModelConfig(**dict(STAGE1, embedding_dim=32)), directory)


def test_a_resume_counts_every_model_of_the_checkpoint(tmp_path):
    # Training's resume asks for every model (every_model=True): one the checkpoint holds and
    # the run being resumed lacks is reported; optimizers and counters are not models.
    models = builder.build_models(builder.ModelConfig(**STAGE1))
    checkpoint = tf.train.Checkpoint(
        identity_classifier_optimizer=tf.Variable(1.0), step=tf.Variable(1),
        **builder.checkpoint_objects(models))
    prefix = checkpoint.write(str(tmp_path / "ckpt"))
    generator_only = {"generator": models.generator}
    assert runs.unused_model_values(prefix, generator_only) == []
    unused = runs.unused_model_values(prefix, generator_only, every_model=True)
    assert unused and all(path.startswith("image_discriminator_64/") for path in unused)
    assert runs.unused_model_values(prefix, builder.checkpoint_objects(models),
                                    every_model=True) == []


def test_resume_needs_the_runs_model_flags(stage2):
    directory, _ = stage2
    assert runs.resume_problem(directory, builder.ModelConfig(**STAGE2)) is None
    problem = runs.resume_problem(directory, builder.ModelConfig(**STAGE1))
    assert "--fuser=none here, --fuser=attention in the run" in problem
    assert f"--flagfile={os.path.join(directory, 'flags.cfg')}" in problem


# -- flagfiles ----------------------------------------------------------------------------------

def _parsed(argv, tool="describe_model"):
    """A tool's flags (by default describe_model's: model options and --checkpoint_dir),
    parsed from ``argv``."""
    flag_values = sf2f_flags.ToolFlags(tool)
    flag_values(argv)
    return flag_values


def _model_options(flag_values):
    """What a tool hands keras_sf2f.runs: the model options given, and the flagfiles."""
    return flag_values.given(builder.ModelConfig), flag_values.flagfiles


def test_boolean_flags_read_as_absl_reads_them(tmp_path):
    (tmp_path / "inner.cfg").write_text("--encoder_add_noise=T\n--eval_dlib=0\n")
    # absl reads a nested path from the working directory: an absolute one for the comparison.
    (tmp_path / "outer.cfg").write_text(
        f"# comment\n// another comment\n\n--flagfile={tmp_path / 'inner.cfg'}\n"
        "--noencoder_noise_at_inference\n--train_fuser_only\n-jit_compile=false\n"
        "--reference_galleries=TRUE\n--json=1\n--eval_oracle=f\n--embedding_dim=64\n")
    path = str(tmp_path / "outer.cfg")
    values = runs.read_flagfile(path)
    booleans = ("encoder_add_noise", "eval_dlib", "encoder_noise_at_inference",
                "train_fuser_only", "jit_compile", "reference_galleries", "json", "eval_oracle")
    for name in booleans:
        # Each by a tool that has it (the others skip it in a flagfile).
        by_absl = _parsed(["test", f"--flagfile={path}"], sf2f_flags.owners(name)[0])
        assert runs.parse_bool(values[name], name) is getattr(by_absl, name), name
    by_absl = _parsed(["test", f"--flagfile={path}"])
    assert values["embedding_dim"] == "64" == str(by_absl.embedding_dim)
    config = runs.model_config_from_flagfile(path)
    assert config.encoder_add_noise is True and config.encoder_noise_at_inference is False
    # What absl refuses, the reader refuses.
    (tmp_path / "bad.cfg").write_text("--encoder_add_noise=yes\n")
    with pytest.raises(absl_flags.IllegalFlagValueError):
        _parsed(["test", f"--flagfile={tmp_path / 'bad.cfg'}"])
    with pytest.raises(runs.RunError, match="--encoder_add_noise=yes is not a boolean"):
        runs.model_config_from_flagfile(str(tmp_path / "bad.cfg"))


def test_no_flag_name_makes_noname_ambiguous():
    # read_flagfile reads --noX as X=false, absl's reading for a boolean X: right as long as
    # no flag is itself called "no..." (absl would look that one up first).
    every = {name: opt for tool in sf2f_flags.TOOLS
             for name, opt in sf2f_flags.tool_options(tool).items()}
    assert not [name for name in every if name.startswith("no") and name[2:] in every]
    booleans = {name for name, opt in every.items() if opt.kind is bool}
    assert not [name for name in booleans if name.startswith("no")]


def test_flagfile_errors_are_named(tmp_path):
    (tmp_path / "loop.cfg").write_text("--flagfile=loop.cfg\n")
    with pytest.raises(runs.RunError, match="includes itself"):
        runs.read_flagfile(str(tmp_path / "loop.cfg"))
    (tmp_path / "stray.cfg").write_text("--embedding_dim=8\n  # an indented comment\n")
    with pytest.raises(runs.RunError, match="is not a flag"):
        runs.read_flagfile(str(tmp_path / "stray.cfg"))
    with pytest.raises(runs.RunError, match="cannot read flagfile"):
        runs.read_flagfile(str(tmp_path / "missing.cfg"))


# -- overlays -----------------------------------------------------------------------------------

def test_an_overlay_alone_says_what_it_overlays():
    demo, fuser = (os.path.join(CONFIGS, name) for name in ("demo.cfg", "demo_fuser.cfg"))
    argv = ["tool", f"--flagfile={fuser}"]
    with pytest.raises(runs.RunError) as error:
        runs.command_line_model_config(*_model_options(_parsed(argv)))
    message = str(error.value)
    assert f"{fuser} is an overlay" in message and "configs/demo.cfg" in message
    assert "--encoder" in message and "full-size SF2F 64" in message
    # With what it overlays, the two describe the demo's stage 2.
    argv = ["tool", f"--flagfile={demo}", f"--flagfile={fuser}"]
    config = runs.command_line_model_config(*_model_options(_parsed(argv)))
    assert config.fuser == "attention" and config.embedding_dim == 128
    # A whole configuration, or plain flags, are no overlay.
    for argv in (["tool", f"--flagfile={demo}"], ["tool", "--fuser=attention"],
                 ["tool", "--flagfile", os.path.join(CONFIGS, "sf2f_64_fuser.cfg")]):
        runs.command_line_model_config(*_model_options(_parsed(argv)))


def test_every_whole_configuration_sets_the_architecture():
    # The overlay rule's premise: configs/ holds whole configurations and one overlay.
    overlays = []
    for name in sorted(os.listdir(CONFIGS)):
        path = os.path.join(CONFIGS, name)
        if runs.overlay_problem([path], ()) is not None:
            overlays.append(name)
        else:
            assert set(runs.ARCHITECTURE_FLAGS) <= set(runs.read_flagfile(path)), name
    assert overlays == ["demo_fuser.cfg"]


def test_describe_model_refuses_an_overlay_alone():
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "trainers", "describe_model.py"),
         "--flagfile=configs/demo_fuser.cfg"], capture_output=True, text=True, timeout=300,
        cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 1
    assert "configs/demo_fuser.cfg is an overlay" in result.stderr
    assert "--flagfile=configs/demo.cfg --flagfile=configs/demo_fuser.cfg" in result.stderr
    assert "Traceback" not in result.stderr
