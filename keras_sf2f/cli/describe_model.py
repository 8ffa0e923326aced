"""Describes the models of a configuration: per-module parameter counts and shapes.

    python trainers/describe_model.py --flagfile=configs/sf2f_64.cfg          # human summary
    python trainers/describe_model.py --flagfile=configs/sf2f_64.cfg --json   # one JSON object
    python trainers/describe_model.py --checkpoint_dir=runs/demo/stage2       # a run's models

The JSON object maps generator (encoder + fuser + decoder), voice_encoder (without the fuser),
fuser (0 when absent), face_decoder and every discriminator (image_discriminator_<res>,
identity_classifier_<res>) to its parameter count (BatchNorm moving statistics excluded).

With --checkpoint_dir (a run directory, one of its best_<metric>/ sub-directories or a
checkpoint prefix) the configuration is the run's own (its flags.cfg); model flags given as
well must agree with it. An overlay flagfile given
alone (configs/demo_fuser.cfg, which adds the fuser to configs/demo.cfg) is an error that says
what it overlays, not a description of the default model with a fuser.
"""

import json
import sys

from absl import app

from keras_sf2f import runs
from keras_sf2f.cli import run_absl_tool
from keras_sf2f.flags import ToolFlags
from keras_sf2f.models import builder

FLAGS = ToolFlags("describe_model")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        given = FLAGS.given(builder.ModelConfig)
        if FLAGS.checkpoint_dir:
            trained = runs.load_run_for_tool(FLAGS.checkpoint_dir, given, FLAGS.flagfiles)
            config, source = trained.model_config, trained.config_source
        else:
            config, source = runs.command_line_model_config(given, FLAGS.flagfiles), None
    except runs.RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    models = builder.build_models(config)
    if FLAGS.json:
        print(json.dumps(builder.count_parameters(models)))
    else:
        if source:
            print(f"Model configuration of {FLAGS.checkpoint_dir}: {source}")
        print(builder.describe(models, config))
    return 0


def run():
    """sf2f-describe-model and trainers/describe_model.py."""
    run_absl_tool(__name__)
