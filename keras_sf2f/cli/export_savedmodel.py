r"""Exports a checkpoint as a TF-Serving model version (SavedModel + warm-up requests).

    python export/export_savedmodel.py --checkpoint_dir=runs/sf2f_64 \
        --export_dir=/models/sf2f_64 [--version=N] [--max_audio_seconds=60] \
        [--data_dir=data/procedural] [--typicality_warning_below=0.05]

writes /models/sf2f_64/<N>/ (default N: the highest existing version + 1; an existing version is
never overwritten: the export is written to a hidden temporary directory, checked by replaying
its warm-up requests, then renamed into place). The model configuration is the run's own:
flags.cfg of --checkpoint_dir, or of its run for a best_<metric>/ sub-directory (written by
training and by export/import_reference_checkpoint.py). Model flags given as well must agree
with it (a contradiction is an error); for a checkpoint without a
configuration of its own, pass the training flagfile: --flagfile=configs/sf2f_64.cfg.

Signatures: serving_default (WAV bytes -> PNG + image), predict_waveform (int16-scale samples +
sample rate -> image + embedding), predict_mel (normalised log-mel windows -> image +
embedding). The graph removes silence with an energy gate (not webrtcvad), resamples
8/22.05/44.1/48 kHz to 16 kHz and fuses 1.25 s windows as the evaluation does. See
docs/serving.md and keras_sf2f/serving/.

Every signature also returns voice_typicality (float32 [batch] in [0, 1]: the share of the
known training and validation voices that are at least as far from the training identities as
this voice; clients warn below --typicality_warning_below, default 0.05). It is calibrated at
export from the prepared data: --data_dir, by default the --data_dir of the run's flags.cfg.
Without prepared data the export goes ahead WITHOUT that output (a warning says so, and the
metadata's voice_typicality.reason); --data_dir= (empty) asks for that explicitly.
"""

import sys

from absl import app, logging

from keras_sf2f import runs
from keras_sf2f.cli import run_absl_tool
from keras_sf2f.flags import ToolFlags
from keras_sf2f.models.builder import ModelConfig

FLAGS = ToolFlags("export_savedmodel")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.checkpoint_dir:
        raise app.UsageError("--checkpoint_dir is required")
    if not FLAGS.export_dir:
        raise app.UsageError("--export_dir is required (<base>/<model name>)")
    # Lazy: TensorFlow and the serving graph load only for a command that runs (fast --help).
    from keras_sf2f.serving import inference, savedmodel  # noqa: PLC0415

    try:
        # The run's own configuration; the model flags given must agree with it, and describe
        # only a checkpoint without one.
        trained = runs.load_run_for_tool(FLAGS.checkpoint_dir, FLAGS.given(ModelConfig),
                                         FLAGS.flagfiles)
        serving_config = inference.ServingConfig(
            max_audio_seconds=FLAGS.max_audio_seconds,
            max_windows=FLAGS.serving_max_windows).validate()
        exported = savedmodel.export_run(
            trained, FLAGS.export_dir, FLAGS.version, serving_config, verify=FLAGS.verify_export,
            data_dir=FLAGS.data_dir, typicality_warning_below=FLAGS.typicality_warning_below)
    except (savedmodel.ExportError, ValueError, FileNotFoundError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    module = exported.module
    if not module.has_typicality:
        # Loud on purpose: a served model without it cannot warn about unfamiliar voices.
        sys.stderr.write(f"WARNING: exported WITHOUT voice_typicality: "
                         f"{module.typicality_reason}\n")
    logging.info("exported %s", exported.path)
    print(exported.path)
    return 0


def run():
    """sf2f-export-savedmodel and export/export_savedmodel.py."""
    run_absl_tool(__name__)
