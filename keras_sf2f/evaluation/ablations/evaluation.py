"""Evaluating the trained variants: one shared ``Evaluator`` (test split, ground truth, crops
and embedders are the same for every variant), on the aligned test faces of the plan's
data_dir -- also for the variant trained on in-the-wild faces. Each variant gets its report
(no page of its own) and TensorBoard scalars under the validation tags."""

from __future__ import annotations

import os
import time
from typing import Callable

from keras_sf2f.evaluation.ablations import inputs
from keras_sf2f.evaluation.ablations.catalog import AblationError, Variant
from keras_sf2f.evaluation.ablations.plan import Plan, read_flagfile


class VariantEvaluation:
    """Evaluates variants one after the other with the evaluator made for the first."""

    def __init__(self, plan: Plan, stamp: Callable[[str], None]):
        self.plan = plan
        self._stamp = stamp
        self._evaluator = None
        self._notes = []

    @property
    def split(self):
        """The evaluation split's table once the evaluator exists (the results page's
        speech), else None."""
        return self._evaluator.split if self._evaluator else None

    def evaluator(self):
        if self._evaluator is None:
            from keras_sf2f.evaluation import evaluate as ev  # noqa: PLC0415
            p = self.plan
            config = p.evaluation_config()
            # Data with the channels: the voice-quality row reads all 44, the others the
            # first 40 (evaluate.FaceGenerator).
            config.voice_quality = inputs.has_voice_quality(p.data_dir)
            embedders, notes = ev.make_embedders(p.face_network, p.eval_dlib)
            image_size = int(read_flagfile(p.base_config).get("image_size", 64))
            centroids, note = ev.classifier_centroids(p.data_dir, embedders[0], image_size)
            self._evaluator = ev.Evaluator(config, embedders, image_size, centroids)
            self._notes = notes + [note]
        return self._evaluator

    def evaluate(self, v: Variant, variant_dir: str, record: dict) -> dict:
        """Evaluates the latest checkpoint of ``variant_dir``/model, writes the variant's
        report and summaries, completes ``record`` (status, checkpoint, step, timing) and
        returns the variant's metrics.json results."""
        from keras_sf2f.evaluation import evaluate as ev  # noqa: PLC0415
        t0 = time.monotonic()
        evaluator = self.evaluator()
        model_dir = os.path.join(variant_dir, "model")
        model_config, source = ev.model_config_for_checkpoint(model_dir)
        if model_config is None:
            raise AblationError(f"{model_dir} has no flags.cfg")
        if max(model_config.output_resolutions) != evaluator.image_size:
            raise AblationError(f"{v.name} generates {max(model_config.output_resolutions)} px "
                                f"faces; the ablations evaluate at {evaluator.image_size} px")
        generator, prefix, step = ev.load_generator(model_dir, model_config)
        self._stamp(f"evaluating {v.name} ({prefix}, {evaluator.config.runs} runs)")
        out = evaluator.evaluate(ev.FaceGenerator(generator, evaluator.config.batch_size))
        results = {v.name: out["results"]}
        summary_dir = os.path.join(model_dir, "eval")
        ev.write_summaries(summary_dir, results, {v.name: step},
                           training_embedder=evaluator.embedders[0].name)
        notes = self._notes + [
            f"`{v.name}` ({v.label}): checkpoint `{prefix}` (step {step}), trained with "
            f"`{' '.join(record['train_args'])}`."]
        ev.write_report(os.path.join(variant_dir, "report"), evaluator.config,
                        evaluator, results, {v.name: out["samples"]}, notes,
                        figure_columns=[(v.name, v.name, None)], summary_dir=summary_dir,
                        results_page=False)
        record.update(status="done", checkpoint=prefix, trained_step=step,
                      eval_seconds=round(time.monotonic() - t0, 1),
                      evaluated=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        del generator, out
        return results[v.name]

    def oracle(self):
        """The voice-attribute oracle's ``{embedder: metrics}`` for the tables' reference
        rows, or None (``evaluate.Evaluator.oracle``)."""
        out = self.evaluator().oracle()
        if out is None:
            return None
        from keras_sf2f.evaluation import evaluate as ev  # noqa: PLC0415
        return out["results"][ev.ORACLE_PROTOCOL]
