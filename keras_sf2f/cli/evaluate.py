r"""Evaluates a generator checkpoint on held-out identities and writes a report.

    python trainers/evaluate.py --data_dir=runs/demo/data \
        --checkpoint_dir=runs/demo/stage1 --face_network=runs/demo/face_net \
        --report_dir=runs/demo/report [--baseline_checkpoint_dir=runs/v2f/model] \
        [--reference_galleries] [--summary_dir=runs/demo/stage1/eval]

The model configuration is the run's own (flags.cfg of --checkpoint_dir, or of its run for a
best_<metric>/ sub-directory). Model flags given as well (e.g. --flagfile=configs/demo.cfg)
must agree with it: a contradiction is an error. Only a checkpoint without a configuration of
its own takes the model flags given (--flagfile=...). The training and data preparation
options of a shared flagfile such as configs/demo.cfg are skipped.

Writes REPORT_DIR/report.md (tables per embedder, mean ± std over runs; the face detection
rate, diversity and collapse, and the attribute reader's table, see --eval_detection,
--eval_diversity, --eval_attributes), faces.png, the
seed's Figure-1 grids (figure1_<input>.png: ground truth | SF2F | voice2face per identity;
the voice2face column needs --baseline_checkpoint_dir), samples.npz, metrics.json, and the
metrics as TensorBoard scalars (--summary_dir, default REPORT_DIR/tensorboard) under the tags
training validates with. --reference_galleries scores recall within the reference's fixed
100-identity galleries and stops with an error on a split of fewer than 100 identities. See
keras_sf2f/evaluation/evaluate.py for the protocols.
"""

import os
import sys

from absl import app, logging

from keras_sf2f import runs
from keras_sf2f.cli import run_absl_tool
from keras_sf2f.evaluation import face_report
from keras_sf2f.evaluation.detection import detector_available
from keras_sf2f.flags import ToolFlags
from keras_sf2f.models.builder import ModelConfig, build_generator
from keras_sf2f.progress import Progress

FLAGS = ToolFlags("evaluate")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("data_dir", "checkpoint_dir", "report_dir", "face_network"):
        if not getattr(FLAGS, name):
            raise app.UsageError(f"--{name} is required")
    if FLAGS.eval_model_name == FLAGS.baseline_name:
        raise app.UsageError("--eval_model_name and --baseline_name must differ")
    logging.set_verbosity(logging.INFO)
    # The runs first: a contradiction or a missing configuration is reported before any
    # model, data or embedder is loaded.
    try:
        trained = runs.load_run_for_tool(FLAGS.checkpoint_dir, FLAGS.given(ModelConfig),
                                         FLAGS.flagfiles)
        baseline = None
        if FLAGS.baseline_checkpoint_dir:
            baseline = runs.load_run(
                FLAGS.baseline_checkpoint_dir, fallback_source=FLAGS.baseline_flagfile or "",
                fallback=(lambda: runs.model_config_from_flagfile(FLAGS.baseline_flagfile))
                if FLAGS.baseline_flagfile else None,
                missing_hint="pass --baseline_flagfile (e.g. configs/voice2face_64.cfg)")
    except runs.RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    model_config = trained.model_config
    image_size = max(model_config.output_resolutions)
    if baseline is not None and max(baseline.model_config.output_resolutions) != image_size:
        raise app.UsageError(
            f"the baseline generates {max(baseline.model_config.output_resolutions)} px faces, "
            f"the evaluated model {image_size} px: compare models of one resolution")
    try:
        generators = {FLAGS.eval_model_name: trained.restore_generator()}
        if baseline is not None:
            generators[FLAGS.baseline_name] = baseline.restore_generator()
    except runs.RunError as e:  # e.g. a configuration its checkpoint does not match
        print(f"error: {e}", file=sys.stderr)
        return 1
    # Lazy: importing the evaluation starts TensorFlow; --help and usage errors stay fast.
    from keras_sf2f.evaluation import evaluate as ev  # noqa: PLC0415
    from keras_sf2f.evaluation.results import ORACLE_MODEL  # noqa: PLC0415

    config = ev.EvaluationConfig(
        data_dir=FLAGS.data_dir, split=FLAGS.eval_split,
        durations=tuple(float(d) for d in FLAGS.eval_durations), runs=FLAGS.eval_runs,
        seed=FLAGS.eval_seed, fuser_protocol=FLAGS.eval_fuser_protocol,
        max_windows=FLAGS.eval_max_windows, reference_ground_truth=FLAGS.reference_ground_truth,
        galleries="reference" if FLAGS.reference_galleries else None,
        diversity=FLAGS.eval_diversity, attributes=FLAGS.eval_attributes,
        voice_quality=model_config.voice_quality_channels)

    notes = []
    if FLAGS.eval_detection:
        config.detection = detector_available()
        if not config.detection:
            notes.append("No face detection rate: dlib is not installed (pip install dlib-bin).")

    # The steps before the first run and after the last take minutes on a slow machine: say
    # what is going on.
    logging.info("evaluation: embedding the %s split's photos and the face-identity "
                 "network's identities", config.split)
    embedders, embedder_notes = ev.make_embedders(FLAGS.face_network, FLAGS.eval_dlib)
    notes = embedder_notes + notes
    centroids, note = ev.classifier_centroids(FLAGS.data_dir, embedders[0], image_size)
    notes.append(note)
    try:
        evaluator = ev.Evaluator(config, embedders, image_size, centroids)
    except ValueError as e:  # e.g. --reference_galleries on a split of < 100 identities
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 1

    name, baseline_name = FLAGS.eval_model_name, FLAGS.baseline_name
    models = dict(generators)
    steps = {name: trained.step}
    if baseline is not None:
        steps[baseline_name] = baseline.step
    notes.append(f"`{name}`: checkpoint `{trained.checkpoint}` (step {steps[name]}).")
    if baseline is not None:
        notes.append(f"`{baseline_name}`: checkpoint `{baseline.checkpoint}` (step "
                     f"{steps[baseline_name]}), model configuration from "
                     f"`{baseline.config_source}`.")
    if FLAGS.eval_untrained_baseline:
        # Seeded, so that two evaluations' reports have the same untrained row.
        models["untrained"] = build_generator(model_config, seed=FLAGS.eval_seed)
        steps["untrained"] = 0
        notes.append("`untrained`: the same architecture as "
                     f"`{name}` freshly initialised from --eval_seed (no training).")

    protocols = len(config.durations) * config.runs
    progress = Progress(protocols * len(models), "evaluating", unit="runs", write=logging.info)
    results, samples, figures = {}, {}, {}
    for model_name, g in models.items():
        out = evaluator.evaluate(ev.FaceGenerator(g, config.batch_size), progress,
                                 typicality=model_name != "untrained")
        results[model_name], samples[model_name] = out["results"], out["samples"]
        figures[model_name] = out["figures"]

    if FLAGS.eval_oracle:
        out = evaluator.oracle(Progress(evaluator.oracle_runs, "voice-attribute oracle",
                                        unit="runs", write=logging.info))
        if out is None:
            notes.append("No voice-attribute oracle: the data is not the procedural corpus.")
        else:
            results[ORACLE_MODEL], samples[ORACLE_MODEL] = out["results"], out["samples"]
            figures[ORACLE_MODEL] = out["figures"]
            notes.append(
                f"`{ORACLE_MODEL}`: no model, three kinds of faces per test identity, "
                f"{config.runs} runs with fresh donors (training identities). "
                f"`{ev.ORACLE_PROTOCOL}`: the identity's own voice-linked attributes (gender, "
                "age, size, weight, accent, breathiness) and its own appearance draws (skin "
                "tone, hair colour and length, grey hair, baldness, beard, brows), with a "
                "donor's face-only attributes (eye colour and spacing, clothes, hair volume, "
                "nose width, style, pose): generous, since no voice decides those draws. "
                f"`{ev.ORACLE_VOICE_ONLY_PROTOCOL}`: only the voice-linked attributes are the "
                "identity's; everything else is the donor's draw: a perfect reading of the "
                "voice, drawn as one sharp face. "
                f"`{ev.ORACLE_VOICE_MEAN_PROTOCOL}`: the pixel mean of that many voice-only "
                "faces, what a model trained with a pixel loss aims at when it reads the voice "
                "perfectly. A voice-only model can be expected to reach the voice-only rows, "
                "not the drawn one (keras_sf2f/evaluation/oracle.py).")

    # The ground-truth photos' figures are the ceiling the models are read against: the
    # report's first row, not a TensorBoard run (they have no training step).
    model_figures = dict(figures)
    logging.info("evaluation: scoring the ground-truth photos, then writing the report to %s",
                 FLAGS.report_dir)
    figures = {ev.GROUND_TRUTH_MODEL: evaluator.ground_truth_figures(), **figures}
    notes += evaluator.figure_notes
    summary_dir = FLAGS.summary_dir or os.path.join(FLAGS.report_dir, "tensorboard")
    ev.write_summaries(summary_dir, results, steps, training_embedder=embedders[0].name,
                       figures_by_model=model_figures)
    figure_columns = [(name, name, None), (
        baseline_name, baseline_name if baseline is not None else None,
        "no --baseline_checkpoint_dir given")]
    path = ev.write_report(FLAGS.report_dir, config, evaluator, results,
                           {k: v for k, v in samples.items() if k != "untrained"}, notes,
                           figure_columns=figure_columns, summary_dir=summary_dir,
                           figures_by_model=figures)
    print(f"Report: {os.path.abspath(path)}")
    print(f"Faces:  {os.path.abspath(os.path.join(FLAGS.report_dir, 'faces.png'))}")
    print(f"TensorBoard scalars: {os.path.abspath(summary_dir)}")
    k = 10 if 10 in evaluator.recall_ks else (evaluator.recall_ks[-1] if evaluator.recall_ks
                                              else None)
    if k is not None:
        for e in embedders:
            for model_name in results:
                if model_name == "untrained":
                    continue
                for protocol, per in results[model_name].items():
                    value = per[e.name][f"recall@{k}"]["mean"]
                    base = results.get("untrained", {}).get(protocol, {}).get(e.name, {}).get(
                        f"recall@{k}", {}).get("mean")
                    print(f"  {e.name:>18} {model_name:>12} {protocol:>18}: recall@{k} "
                          f"{value:.3f}" + (f" (untrained {base:.3f})" if base is not None
                                            else ""))
    for model_name, protocols in figures.items():
        for protocol, values in protocols.items():
            shown = [f"{label} {values[key]['mean']:.3f}" for key, label in (
                ("detection_rate", "detection rate"),
                ("detection_rate_darkest_third", "darkest third"),
                ("detection_rate_lightest_third", "lightest third"),
                ("diversity_ratio_pixels", "diversity"),
                ("effective_templates", "templates"), ("attribute_r_gender", "gender r"),
                ("attribute_r_skin_tone", "skin tone r"), ("attribute_r_age", "age r"))
                if key in values]
            if shown:
                print(f"  {model_name:>22} {protocol:>18}: " + ", ".join(shown))
    for sentence in face_report.collapse_sentences(figures, evaluator.split.num_identities):
        print(f"  {sentence}")
    return 0


def run():
    """sf2f-evaluate and trainers/evaluate.py."""
    run_absl_tool(__name__)
