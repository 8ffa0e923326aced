"""Options declared once as dataclass fields, and each tool's flags derived from them
(keras_sf2f/config/, keras_sf2f/flags.py): a tool has its own options only, in its --helpshort
by section; another tool's option is an error on the command line and skipped in a shared
flagfile; a name no tool has is an error naming the flagfile and line; a new field is a new
flag; a run's flags.cfg reads back as its configuration; an overlay flagfile alone is refused.
"""

import dataclasses
import os
import re
import subprocess
import sys

import pytest
from absl import flags as absl_flags

from keras_sf2f import flags as sf2f_flags
from keras_sf2f import runs
from keras_sf2f.config import groups, options
from keras_sf2f.config.options import option
from keras_sf2f.curation.config import CurationConfig
from keras_sf2f.flags import OptionError, ToolFlags
from keras_sf2f.models.builder import ModelConfig
from keras_sf2f.training.config import TrainConfig
from keras_sf2f.training.face_identity_config import FaceIdentityConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
DEMO, FUSER = (os.path.join(CONFIGS, name) for name in ("demo.cfg", "demo_fuser.cfg"))


def _parsed(tool, *argv):
    flag_values = ToolFlags(tool)
    flag_values([tool, *argv])
    return flag_values


# -- each tool has its own options -----------------------------------------------------------------

def test_each_tool_has_exactly_its_groups_options():
    for tool in sf2f_flags.TOOLS:
        if tool == "client":  # argparse (no absl): checked below
            continue
        flag_values = ToolFlags(tool)
        own = set(sf2f_flags.tool_options(tool))
        logging = {name for f in flag_values.get_flags_for_module("absl.logging")
                   for name in (f.name, f.short_name)}
        assert set(flag_values) - logging == own, tool
    assert "review_port" not in ToolFlags("train") and "batch_size" not in ToolFlags("serve")


def test_every_name_is_one_declaration():
    """A name two tools have is the same option (a SharedOption or the same group), so a
    flagfile value means the same to every tool that reads it."""
    declared = {}
    for tool in sf2f_flags.TOOLS:
        for name, opt in sf2f_flags.tool_options(tool).items():
            assert declared.setdefault(name, opt.declaration) == opt.declaration, name


def test_helpshort_lists_the_tools_own_options_by_section():
    text = ToolFlags("train").help_text()
    assert "\nmodel (generator and discriminators):\n" in text and "\ntraining:\n" in text
    assert text.index("model (generator") < text.index("training:")
    assert "--batch_size: Global batch size" in text and "(default: '256')" in text
    assert "--data_dir:" in text and "--face_network:" in text
    for other in ("--review_port", "--num_workers", "--report_dir", "--rest_api_port",
                  "--verbosity"):
        assert other not in text, other
    text = ToolFlags("review_faces").help_text()
    assert "face review:" in text and "--review_port" in text and "--batch_size" not in text
    # --helpfull adds absl's logging flags.
    assert "--verbosity" in ToolFlags("train").help_text(full=True)


def test_helpshort_of_the_command(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "trainers", "train.py"), "--helpshort"],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("Trains SF2F")
    assert "\ntraining:\n" in result.stdout and "--train_steps" in result.stdout
    assert "--review_port" not in result.stdout and "Traceback" not in result.stderr


def test_client_options_are_its_argparse_arguments():
    from keras_sf2f.cli import client
    from keras_sf2f.serving.client import DEFAULT_TYPICALITY_WARNING_BELOW
    parser = client._parser()
    dests = {a.dest for a in parser._actions} - {"help", "files"}
    assert dests == {opt.name for opt in options.options_of(groups.ClientOptions)}
    assert groups.TYPICALITY_WARNING_BELOW.default == DEFAULT_TYPICALITY_WARNING_BELOW


def test_library_configs_are_their_tools_option_groups():
    """FaceIdentityConfig and CurationConfig declare their tools' options themselves: the tool
    builds the library dataclass from its flags (defaults included), under the flag names users
    type, which for some fields are not the field names."""
    for tool, group in (("train_face_identity", FaceIdentityConfig),
                        ("curate_faces", CurationConfig)):
        assert _parsed(tool).config(group) == group(), tool
    face_net = _parsed("train_face_identity", "--face_net_steps=7", "--face_net_dropout=0.5",
                       "--face_net_repeats=1,1,1", "--noface_net_augment", "--data_dir=d")
    assert face_net.config(FaceIdentityConfig) == FaceIdentityConfig(
        steps=7, dropout_rate=0.5, repeats=(1, 1, 1), augment=False)
    assert face_net.given(FaceIdentityConfig) == {"steps": 7, "dropout_rate": 0.5,
                                                  "repeats": (1, 1, 1), "augment": False}
    assert {"steps", "dropout_rate", "face_net_dropout"} & set(face_net) == {"face_net_dropout"}
    curate = _parsed("curate_faces", "--curation_sizes=64,128", "--min_interpupil_px=40",
                     "--curation_model_dir=/m")
    assert curate.config(CurationConfig) == CurationConfig(
        output_sizes=(64, 128), min_interpupil_px=40.0, model_dir="/m")
    assert "output_sizes" not in curate and "model_dir" not in curate
    # Every option is in the tool's help, by its flag name, with its help text.
    for tool, group in (("train_face_identity", FaceIdentityConfig),
                        ("curate_faces", CurationConfig)):
        text = ToolFlags(tool).help_text()
        for opt in options.options_of(group):
            # (absl writes "--[no]name" for a boolean, an enum's choices before its help)
            assert re.search(rf"--(\[no\])?{opt.flag}: (<[^>]*>: )?"
                             rf"{re.escape(opt.help.split()[0])}", text), opt.flag
    assert "--face_net_steps: Training steps" in ToolFlags("train_face_identity").help_text()


def test_flag_names_other_than_the_field_names():
    config = FaceIdentityConfig(steps=5, dropout_rate=0.0, augment=False)
    lines = options.flag_lines(config)
    assert "--face_net_steps=5" in lines and "--face_net_dropout=0.0" in lines
    assert "--noface_net_augment" in lines
    assert _parsed("train_face_identity", *lines).config(FaceIdentityConfig) == config
    # Problems name the flag beside the field.
    with pytest.raises(ValueError, match=r"steps \(--face_net_steps\) must be >= 1, got 0"):
        FaceIdentityConfig(steps=0).validate()
    with pytest.raises(ValueError, match=r"repeats \(--face_net_repeats\) must have 3"):
        FaceIdentityConfig(repeats=(1, 2)).validate()
    with pytest.raises(ValueError, match=r"learning_rate \(--face_net_learning_rate\) must "
                                         r"be > 0"):
        FaceIdentityConfig(learning_rate=0.0).validate()
    with pytest.raises(ValueError, match=r"output_sizes \(--curation_sizes\) must be >= 16"):
        CurationConfig(output_sizes=(8,)).validate()
    with pytest.raises(ValueError, match=r"mtcnn_min_score must be <= 1.0"):
        CurationConfig(mtcnn_min_score=2.0).validate()
    # ... and so do the tools, while parsing.
    with pytest.raises(absl_flags.IllegalFlagValueError, match="--face_net_repeats"):
        _parsed("train_face_identity", "--face_net_repeats=1,2")
    with pytest.raises(absl_flags.IllegalFlagValueError, match="face_net_steps"):
        _parsed("train_face_identity", "--face_net_steps=0")
    with pytest.raises(absl_flags.IllegalFlagValueError, match="--curation_sizes"):
        _parsed("curate_faces", "--curation_sizes=8")
    with pytest.raises(absl_flags.IllegalFlagValueError, match="mask_low < mask_high"):
        _parsed("curate_faces", "--mask_low=0.8")
    # A flag name is taken by one declaration only: the field name is not a flag of any tool.
    assert not sf2f_flags.owners("output_sizes") and not sf2f_flags.owners("dropout_rate")


def test_the_curation_fingerprint_keeps_its_keys():
    """Every manifest row stores the settings' fingerprint and a re-run redoes the rows whose
    fingerprint differs: the field names (not the flag names) and values must hash as
    before."""
    assert CurationConfig().fingerprint() == "b8d328071a523a25"


# -- another tool's options, unknown names -------------------------------------------------------

def test_another_tools_option_on_the_command_line_names_its_tools():
    with pytest.raises(OptionError, match=r"--review_port is an option of review_faces, not "
                                          r"of train"):
        _parsed("train", "--review_port=1")
    with pytest.raises(OptionError, match=r"--data_source is an option of prepare_data, not of "
                                          r"evaluate"):
        _parsed("evaluate", "--data_source", "voxceleb")
    with pytest.raises(OptionError, match="train_face_identity"):
        _parsed("train", "--noface_net_augment")
    with pytest.raises(OptionError, match="--checkpoint_dir is an option of evaluate, "
                                          "describe_model, export_savedmodel, not of train"):
        _parsed("train", "--checkpoint_dir=x")
    # Names no tool has: absl's own error, with its suggestions.
    with pytest.raises(absl_flags.UnrecognizedFlagError, match="bogus"):
        _parsed("train", "--bogus=1")


def test_the_command_line_error_is_one_fatal_line(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "trainers", "train.py"), "--review_port=1"],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith("FATAL Flags parsing error: --review_port is an option of "
                                    "review_faces, not of train")
    assert "Traceback" not in result.stderr


def test_another_tools_option_in_a_shared_flagfile_is_skipped(tmp_path):
    # configs/demo.cfg holds data preparation, model and training options; scripts/main_job.sh
    # gives it to four tools, each taking its own.
    prepare = _parsed("prepare_data", f"--flagfile={DEMO}", "--data_dir=d")
    assert prepare.corpus_identities == 500 and "batch_size" not in prepare
    train = _parsed("train", f"--flagfile={DEMO}", f"--flagfile={FUSER}", "--data_dir=d")
    config = train.config(TrainConfig)
    assert (config.model.fuser, config.model.embedding_dim, config.learning_rate,
            config.train_steps) == ("attention", 128, 1e-4, 60)
    assert train.flagfiles == [DEMO, FUSER]
    evaluate = _parsed("evaluate", f"--flagfile={DEMO}", f"--flagfile={FUSER}",
                       "--checkpoint_dir=c")
    assert evaluate.given(ModelConfig)["fuser"] == "attention"
    face_net = _parsed("train_face_identity", f"--flagfile={DEMO}", "--data_dir=d")
    assert set(face_net.given(groups.FaceIdentityOptions)) == {"data_dir"}
    assert not face_net.given(FaceIdentityConfig)
    # A nested flagfile, and --name value / --noname forms, follow the same rule.
    (tmp_path / "outer.cfg").write_text(f"--flagfile={DEMO}\n--review_port=9\n--nojit_compile\n")
    train = _parsed("train", "--flagfile", str(tmp_path / "outer.cfg"), "--batch_size", "7")
    assert train.batch_size == 7 and train.embedding_dim == 128 and not train.jit_compile


def test_a_name_no_tool_has_in_a_flagfile_names_the_file_and_line(tmp_path):
    path = tmp_path / "typo.cfg"
    path.write_text("# a typo on line 3\n--batch_size=8\n--bach_size=16\n")
    with pytest.raises(OptionError, match=rf"{path}:3: --bach_size is not an option of any "
                                          rf"keras-sf2f tool"):
        _parsed("train", f"--flagfile={path}")
    # Also when the flagfile is another tool's: the name is wrong for every tool.
    with pytest.raises(OptionError, match="typo.cfg:3"):
        _parsed("serve", f"--flagfile={path}")
    path.write_text("--batch_size=8\nstray\n")
    with pytest.raises(OptionError, match=r"typo.cfg:2: 'stray' is not a flag"):
        _parsed("train", f"--flagfile={path}")
    with pytest.raises(OptionError, match="cannot read flagfile"):
        _parsed("train", f"--flagfile={tmp_path / 'missing.cfg'}")


def test_values_are_checked_as_the_options_declare():
    with pytest.raises(absl_flags.IllegalFlagValueError, match="batch_size"):
        _parsed("train", "--batch_size=0")
    with pytest.raises(absl_flags.IllegalFlagValueError, match="strategy"):
        _parsed("train", "--strategy=tpu")
    with pytest.raises(absl_flags.IllegalFlagValueError, match="does not match decoder"):
        _parsed("describe_model", "--image_size=128")
    assert _parsed("train_face_identity", "--face_net_image_size=128").config(
        FaceIdentityConfig).image_size == 128
    with pytest.raises(absl_flags.IllegalFlagValueError, match="face_net_image_size"):
        _parsed("train_face_identity", "--face_net_image_size=96")
    with pytest.raises(ValueError, match=r"batch_size must be >= 1, got 0"):
        TrainConfig(batch_size=0).validate(require_dirs=False)


# -- one declaration: a new field is a new flag ------------------------------------------------------

def test_a_field_added_to_a_group_is_a_flag_with_no_other_edit(monkeypatch):
    @dataclasses.dataclass
    class TrainConfigWithKnob(TrainConfig):
        new_knob: int = option(3, "A knob added for this test.", lower=0)
        new_names: tuple[str, ...] = option(("a", "b"), "Names added for this test.")

    monkeypatch.setitem(sf2f_flags.TOOLS, "train", (ModelConfig, TrainConfigWithKnob))
    flag_values = ToolFlags("train")
    assert "--new_knob: A knob added for this test." in flag_values.help_text()
    config = _parsed("train", "--new_knob=5", "--new_names=x,y,z").config(TrainConfigWithKnob)
    assert (config.new_knob, config.new_names, config.batch_size) == (5, ("x", "y", "z"), 256)
    with pytest.raises(absl_flags.IllegalFlagValueError, match="new_knob"):
        _parsed("train", "--new_knob=-1")
    assert sf2f_flags.owners("new_knob") == ("train",)
    # ... and in the run's configuration file, which reads back.
    assert "--new_knob=5" in config.to_flagfile()


def test_an_option_needs_a_declaration():
    @dataclasses.dataclass
    class Undeclared:
        SECTION = "test"
        plain: int = 3

    with pytest.raises(TypeError, match="Undeclared.plain is neither an option"):
        options.options_of(Undeclared)


# -- a run's one configuration file ------------------------------------------------------------

def test_the_effective_configuration_round_trips(tmp_path):
    config = TrainConfig(
        model_dir=str(tmp_path / "run"), data_dir="/data", face_network="/face net",
        model=ModelConfig(encoder="cnn", encoder_channels=(8, 8, 8, 8), embedding_dim=32,
                          fuser="attention", encoder_add_noise=True,
                          image_discriminator_arch_64="", identity_classifier_arch_64=""),
        learning_rate=1.5e-4, adam_epsilon=1e-8, perceptual_layer_weights=(0.1, 0.2, 0.3, 0.4),
        train_fuser_only=True, init_checkpoint="/stage1", jit_compile=False,
        log_every_seconds=0.1 + 0.2)
    path = tmp_path / "flags.cfg"
    path.write_text(config.to_flagfile())
    assert _parsed("train", f"--flagfile={path}").config(TrainConfig) == config
    assert runs.model_config_from_flagfile(str(path)) == config.model
    assert runs.read_flagfile(str(path))["data_dir"] == "/data"
    # The other tools read the model from it and skip the training options.
    assert _parsed("describe_model", f"--flagfile={path}").config(ModelConfig) == config.model


# -- an overlay alone ----------------------------------------------------------------------------

def test_training_refuses_an_overlay_alone(tmp_path, capsys):
    from keras_sf2f.cli import train
    model_dir = tmp_path / "model"
    train.FLAGS.unparse_flags()
    try:
        train.FLAGS(["train", f"--flagfile={FUSER}", f"--model_dir={model_dir}",
                     f"--data_dir={tmp_path}", "--init_checkpoint=/x", "--perceptual_weight=0"])
        assert train.main(["train"]) == 1
    finally:
        train.FLAGS.unparse_flags()
    err = capsys.readouterr().err
    assert err.startswith(f"error: {FUSER} is an overlay on another configuration")
    assert f"--flagfile=configs/demo.cfg --flagfile={FUSER}" in err
    assert not model_dir.exists()
