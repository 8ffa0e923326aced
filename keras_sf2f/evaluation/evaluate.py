"""Evaluating a generator on held-out identities: the seed's protocols and a readable report.

Protocols (SF2F supplementary material, "Evaluation Runs"; the reference code's fuser protocol):

* ``crops``: for every identity, ``runs`` random crops of a given duration (1.25 s and 5 s by
  default) are cut from its speech; run ``r`` generates one face per identity from crop
  ``r`` and computes every metric; the report gives the mean and the variance over runs.
* ``fuser``: all of an identity's 125-frame windows (sorted utterances from frame 0, at most
  ``max_windows``), fused by the fuser (or averaged without one): one deterministic run.

A crop longer than one 125-frame window is cut into windows and fused when the generator has
a fuser; a stage-1 generator encodes the whole crop as one sequence (the reference's "naive"
mode, its encoder pools over any length).

Metrics (``metrics.py``) are computed with each embedder: the project's face-identity network
and, when installed, dlib's independent recogniser. The ground truth of an identity is its
face images' mean embedding, re-normalised (the seed) or not (``--reference_ground_truth``).
The VGGFace-style score uses an identity classifier's softmax over the classes it knows: the
project's face-identity network scores ``16 * cos(e, centroid_c)`` against the centroids of
its own (faceid) identities, the normalised-softmax head it was trained with.

Recall is retrieval within the whole split (chance ``K / N``) or, with ``galleries=
'reference'``, within the reference's fixed galleries of 100 identities (chance ``K / 100``,
``metrics.reference_gallery_ranges``: a split of fewer than 100 identities is refused).

Face figures (``EvaluationConfig.detection`` / ``diversity`` / ``attributes``, off by default,
on in trainers/evaluate.py): per run, beside the embedder metrics, the fraction of faces in
which dlib's HOG detector finds a face (``detection.py``), the diversity ratio against the
ground truth's photos, the template count and a collapse flag (``diversity.py``), and the
correlation of an attribute reader's readings with the identities' known attributes
(``attribute_reader.py``); ``Evaluator.ground_truth_figures`` gives the same for the photos
(the ceiling). ``face_report.py`` writes them into the report with what each one measures.

Outputs (``write_report``): ``report.md``, ``faces.png`` (every model and protocol),
``figure1_<input>.png`` (the seed's Figure 1 layout: ground truth | SF2F | voice2face per
identity, one picture per input duration), ``samples.npz`` (the pictured faces at every
resolution the models draw, for composite figures), ``metrics.json`` and the results page
``index.html`` (``results_page.py``: per shown identity the photo, players with exactly the
speech the faces were made from, every model's faces and its voice typicality of the identity,
then the metric tables; its files in ``audio/`` and ``images/``); ``write_summaries`` puts the
metrics into TensorBoard under the training validation's tags. The grids show faces at least 128 px large: 64 px faces are
upscaled nearest-neighbour (``MIN_CELL``), and the captions say so.

Voice typicality (``EvaluationConfig.typicality``, on by default; ``Evaluator.voice_typicality``):
per model and identity, the exported model's ``voice_typicality`` output of the identity's
all-windows speech, computed by the serving code itself (``keras_sf2f.serving``: the bank and
leave-one-out calibration of ``savedmodel.typicality_reference`` on the data's training and
validation identities), with the export's warning threshold. In report.md, metrics.json,
samples.npz (the pictured identities, for the ablation page) and on the results page; data
without a training split gets a note saying so instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image, ImageDraw

from keras_sf2f import files
from keras_sf2f import runs as run_files  # "runs" names the crop runs in this module
from keras_sf2f.data import pipelines, records, table
from keras_sf2f.evaluation import (attribute_reader, detection, diversity, face_report, metrics,
                                   oracle)
from keras_sf2f.evaluation import results_page as page
from keras_sf2f.evaluation import summaries as summary_tags
from keras_sf2f.evaluation.embedders import DlibEmbedder, FaceNetEmbedder, dlib_available
from keras_sf2f.evaluation.results import (
    GROUND_TRUTH_MODEL, GROUND_TRUTH_PROTOCOL, ORACLE_PROTOCOL, ORACLE_VOICE_MEAN_PROTOCOL,
    ORACLE_VOICE_ONLY_PROTOCOL, VoiceTypicality, sample_resolutions)
from keras_sf2f.image_ranges import normalized_to_uint8_np, pixels_to_normalized
from keras_sf2f.runs import checkpoint_step

FRAMES_PER_SECOND = 100
CLASSIFIER_LOGIT_SCALE = 16.0


@dataclasses.dataclass
class EvaluationConfig:
    data_dir: str
    split: str = "test"
    durations: tuple = (1.25, 5.0)
    runs: int = 10
    seed: int = 0
    fuser_protocol: bool = True
    max_windows: int = 20
    reference_ground_truth: bool = False
    # None: retrieval within the whole split; 'reference': the reference's 100-identity
    # galleries (metrics.reference_gallery_ranges), reported at the reference's K values.
    galleries: str | None = None
    recall_ks: tuple = (1, 5, 10)
    batch_size: int = 32
    grid_identities: int = 8
    # Face figures beside the embedder metrics, per run (``Evaluator.figures``): the dlib HOG
    # detection rate (detection.py), the diversity ratio and template count against the
    # ground truth (diversity.py), and what an attribute reader trained on the face-only
    # identities reads in the faces (attribute_reader.py). Off by default so that callers
    # that only want the seed's metrics (ablations, tests) pay nothing.
    detection: bool = False
    diversity: bool = False
    attributes: bool = False
    # Each identity's voice typicality (``Evaluator.voice_typicality``: the exported model's
    # ``voice_typicality`` of its all-windows speech, calibrated on the data's training and
    # validation identities), shown on the results page. Costs one embedding of the training
    # split per model; data without a training split only gets a note.
    typicality: bool = True
    # The records' voice-quality channels after the log-mels, for models trained with
    # --voice_quality_channels (a log-mel model evaluated beside one reads the first 40).
    voice_quality: bool = False

    def effective_recall_ks(self) -> tuple:
        if self.galleries == "reference" and tuple(self.recall_ks) == (1, 5, 10):
            return tuple(metrics.REFERENCE_RECALL_KS)
        return tuple(self.recall_ks)


def _windows(mels: tf.Tensor):
    """[B, frames, 40] -> [B, n, 125, 40] non-overlapping windows (the fuser's input)."""
    n = mels.shape[1] // pipelines.WINDOW_FRAMES
    return tf.reshape(mels[:, :n * pipelines.WINDOW_FRAMES],
                      [-1, n, pipelines.WINDOW_FRAMES, mels.shape[2]])


class FaceGenerator:
    """Batched, traced generation of faces from log-mels: the largest output image, or every
    resolution the generator draws (``all_resolutions=True``, lowest first) from the same
    forward pass. The features may carry more channels than the generator takes (data with
    voice-quality channels for a log-mel model): it gets its first ``input_channels``."""

    def __init__(self, generator, batch_size: int):
        self.generator = generator
        self.batch_size = batch_size
        self.has_fuser = getattr(generator, "fuser", None) is not None

        encoder = getattr(generator, "encoder", None)
        bins = self.channels = int(getattr(encoder, "input_channels", records.NUM_MEL_BINS))

        # One trace per input kind, whatever the batch size and length.
        @tf.function(input_signature=[tf.TensorSpec([None, None, bins], tf.float32)])
        def run_sequence(mels):
            images, _ = generator(mels, training=False)
            return [tf.cast(x, tf.float32) for x in images]

        @tf.function(input_signature=[
            tf.TensorSpec([None, None, pipelines.WINDOW_FRAMES, bins], tf.float32),
            tf.TensorSpec([None, None], tf.bool)])
        def run_segments(segments, mask):
            images, _ = generator(segments, segment_mask=mask, training=False)
            return [tf.cast(x, tf.float32) for x in images]

        self._sequence, self._segments = run_sequence, run_segments

    @staticmethod
    def _join(batches: list, all_resolutions: bool):
        per_resolution = [np.concatenate([b[k].numpy() for b in batches])
                          for k in range(len(batches[0]))]
        return per_resolution if all_resolutions else per_resolution[-1]

    def _check(self, features: np.ndarray) -> None:
        if features.shape[-1] < self.channels:
            raise ValueError(
                f"the model takes {self.channels} feature channels per frame, the data has "
                f"{features.shape[-1]}: a model trained with --voice_quality_channels needs "
                f"them in the data and the evaluation (EvaluationConfig.voice_quality)")

    def from_crops(self, crops: np.ndarray, all_resolutions: bool = False):
        self._check(crops)
        crops = crops[..., :self.channels]
        out = []
        for i in range(0, len(crops), self.batch_size):
            mels = tf.constant(crops[i:i + self.batch_size])
            if self.has_fuser and mels.shape[1] >= pipelines.WINDOW_FRAMES:
                segs = _windows(mels)
                out.append(self._segments(segs, tf.ones(segs.shape[:2], tf.bool)))
            else:
                out.append(self._sequence(mels))
        return self._join(out, all_resolutions)

    def from_windows(self, segments: np.ndarray, mask: np.ndarray,
                     all_resolutions: bool = False):
        self._check(segments)
        segments = segments[..., :self.channels]
        out = []
        for i in range(0, len(segments), self.batch_size):
            segs = tf.constant(segments[i:i + self.batch_size])
            m = tf.constant(mask[i:i + self.batch_size])
            out.append(self._segments(segs, m))
        return self._join(out, all_resolutions)


class FaceSamples(dict):
    """A model's pictured faces: ``{protocol label: faces of every identity}`` (the first run,
    largest resolution, generator space), as ``Evaluator.evaluate`` always returned them, plus

    * ``resolutions``: ``{protocol label: {size: faces of the first grid_identities
      identities}}`` at every resolution the generator draws (from the same forward pass);
    * ``has_fuser``: whether the generator fused windows with its attention fuser;
    * ``typicality``: the model's ``VoiceTypicality`` of every identity (or None).

    A plain dict (e.g. the oracle's samples) works wherever this does: the report then shows
    the largest resolution only."""

    def __init__(self, *args, resolutions: dict | None = None, has_fuser: bool = False,
                 typicality: "VoiceTypicality | None" = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.resolutions = resolutions or {}
        self.has_fuser = has_fuser
        # The model's voice typicality per identity (Evaluator.voice_typicality), or None.
        self.typicality = typicality


def _summary(values: list[dict]) -> dict:
    keys = values[0].keys()
    return {k: {"mean": float(np.mean([v[k] for v in values])),
                "variance": float(np.var([v[k] for v in values])),
                "runs": len(values)} for k in keys}


class Evaluator:
    """Holds the evaluation split, its ground truth per embedder, and the crops."""

    def __init__(self, config: EvaluationConfig, embedders: list, image_size: int,
                 classifier_centroids: dict | None = None):
        self.config = config
        self.embedders = embedders
        self.image_size = image_size
        if config.galleries not in (None, "reference"):
            raise ValueError(f"galleries must be None or 'reference', got {config.galleries!r}")
        self.split = table.load_split(config.data_dir, config.split,
                                      voice_quality=config.voice_quality)
        self.centroids = classifier_centroids or {}
        n = self.split.num_identities
        if config.galleries == "reference":
            self.galleries = metrics.reference_gallery_ranges(n)  # ValueError below 100
            gallery_size = self.galleries[0][1] - self.galleries[0][0]
        else:
            self.galleries = None
            gallery_size = n
        # K beyond the gallery is meaningless (every query is a hit); small splits drop it.
        self.recall_ks = tuple(k for k in config.effective_recall_ks() if k <= gallery_size)
        self.gallery_size = gallery_size
        faces, labels = [], []
        for image, label in pipelines.faces_dataset(self.split, image_size=image_size
                                                    ).as_numpy_iterator():
            faces.append(image)
            labels.append(label)
        self.faces = np.stack(faces)
        self.labels = np.asarray(labels)
        # The first face of each identity (faces are in label order): the pictured one.
        self.first_faces = np.flatnonzero(np.r_[True, np.diff(self.labels) != 0])
        # Every face's embedding is kept: the diversity figures compare generated faces with
        # single ground-truth photos, not with the identities' mean embeddings.
        self.face_embeddings = {e.name: e.embed(self.faces) for e in embedders}
        self.ground_truth = {
            e.name: metrics.ground_truth_embeddings(
                self.face_embeddings[e.name], self.labels, n,
                renormalize=not config.reference_ground_truth)
            for e in embedders}
        self.detector = None
        self.brightness_thirds = None
        if config.detection:
            self.detector = detection.FaceDetector()
            # Each identity's third by its pictured photo's face-centre brightness: the
            # detector finds dark faces less often even in photos (detection.py).
            self.brightness_thirds = detection.brightness_thirds(
                detection.face_centre_brightness(self.faces[self.first_faces]))
        self.attribute_reader = None  # trained on first use (attribute_reader.py)
        self._attribute_targets = None
        self.figure_notes = []
        self.crops = {}
        for d in config.durations:
            frames = int(round(d * FRAMES_PER_SECOND))
            ds = pipelines.evaluation_crops(self.split, frames=frames,
                                            crops_per_identity=config.runs, seed=config.seed)
            crops, short = [], 0
            for c, _, available in ds.as_numpy_iterator():
                crops.append(c)
                short += int(available < frames)
            self.crops[d] = np.stack(crops)  # [identities, runs, frames, 40]
            if short:
                logging.warning("%d of %d identities have less than %.2f s of speech: their "
                                "crops are padded", short, n, d)
        self.short_identities = {}

    def _score(self, images: np.ndarray, embeddings: dict | None = None) -> dict:
        out = {}
        for e in self.embedders:
            emb = e.embed(images) if embeddings is None else embeddings[e.name]
            m = metrics.similarity_metrics(emb, self.ground_truth[e.name])
            if self.recall_ks:
                m.update(metrics.recall_at_k(emb, self.ground_truth[e.name],
                                             ks=self.recall_ks, galleries=self.galleries))
            if e.name in self.centroids:
                logits = CLASSIFIER_LOGIT_SCALE * emb @ self.centroids[e.name].T
                p = np.exp(logits - logits.max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                m["vggface_score"] = metrics.vggface_score(
                    p, splits=min(5, len(p)), seed=self.config.seed)[0]
            out[e.name] = m
        return out

    @property
    def wants_figures(self) -> bool:
        return self.config.detection or self.config.diversity or self.config.attributes

    def figures(self, images: np.ndarray, embeddings: dict | None = None) -> dict:
        """The face figures of one face per identity (label order, generator space):
        ``{figure: float}`` for the figures the config asks for (empty when none)."""
        out = {}
        if not self.wants_figures:
            return out
        pixels = normalized_to_uint8_np(images)
        if self.detector is not None:
            found = self.detector.detect(pixels)
            out["detection_rate"] = detection.found_rate(found)
            if len(found) == len(self.brightness_thirds):
                out.update(detection.rates_by_third(found, self.brightness_thirds))
        if self.config.diversity:
            if embeddings is None:
                embeddings = {e.name: e.embed(images) for e in self.embedders}
            first = self.first_faces
            out.update(diversity.diversity_figures(
                pixels, normalized_to_uint8_np(self.faces[first]), embeddings,
                {name: emb[first] for name, emb in self.face_embeddings.items()}))
        if self.config.attributes:
            reader, targets = self.attributes()
            if reader is not None:
                out.update(reader.figures(images, targets))
        return out

    def attributes(self) -> tuple:
        """``(reader, targets)``: the attribute reader (trained once, on first use, on the
        face-only identities; ``attribute_reader.py``) and the split's known attributes, or
        ``(None, None)`` when the data has none (a note says why)."""
        if self._attribute_targets is None:
            self.attribute_reader, self._attribute_targets, note = \
                attribute_reader.reader_for_split(self.config.data_dir, self.config.split,
                                                  self.split.names, seed=self.config.seed)
            if note:
                self.figure_notes.append(note)
        return self.attribute_reader, self._attribute_targets

    def score_runs(self, runs) -> tuple:
        """``(summary, first)`` over face arrays, one face per identity of the split in label
        order (floats as the generator makes them): ``summary`` is {embedder: {metric: {mean,
        variance, runs}}}, ``first`` the first run's faces (the pictured samples). ``runs`` may
        be a generator: each array is scored as it comes and only the first is kept."""
        summary, _, first = self.score_runs_with_figures(runs)
        return summary, first

    def score_runs_with_figures(self, runs) -> tuple:
        """``(summary, figures, first)``: ``score_runs`` plus the face figures of every run
        summarised the same way (``{figure: {mean, variance, runs}}``, empty when the config
        asks for none)."""
        per_run, per_run_figures, first = [], [], None
        for images in runs:
            if first is None:
                first = images
            embeddings = {e.name: e.embed(images) for e in self.embedders}
            per_run.append(self._score(images, embeddings))
            per_run_figures.append(self.figures(images, embeddings))
        figures = _summary(per_run_figures) if per_run_figures[0] else {}
        return {e: _summary([run[e] for run in per_run]) for e in per_run[0]}, figures, first

    def ground_truth_figures(self) -> dict:
        """The face figures of the ground-truth photos, the ceiling a model is read against:
        run ``k`` takes photo ``k`` of every identity (as many runs as every identity has
        photos, at most ``config.runs``). ``{GROUND_TRUTH_PROTOCOL: {figure: summary}}``;
        empty when the config asks for no figures."""
        if not self.wants_figures:
            return {}
        counts = np.bincount(self.labels, minlength=self.split.num_identities)
        runs = int(min(counts.min(), self.config.runs))
        per_run = []
        for k in range(runs):
            images = self.faces[self.first_faces + k]
            per_run.append(self.figures(images, {name: emb[self.first_faces + k] for name, emb
                                                 in self.face_embeddings.items()}))
        return {GROUND_TRUTH_PROTOCOL: _summary(per_run)}

    # The oracle's three protocols (``oracle``), each scored over ``config.runs`` runs.
    ORACLE_PROTOCOLS = (ORACLE_PROTOCOL, ORACLE_VOICE_ONLY_PROTOCOL, ORACLE_VOICE_MEAN_PROTOCOL)

    @property
    def oracle_runs(self) -> int:
        """How many runs ``oracle`` scores: the total of its ``progress``."""
        return len(self.ORACLE_PROTOCOLS) * self.config.runs

    def oracle(self, progress=None) -> dict | None:
        """The voice-attribute oracle's faces scored like a model's (``oracle.py``), one run per
        evaluation run with fresh donors, as three protocols: ``ORACLE_PROTOCOL`` (generous:
        the identity's own appearance draws), ``ORACLE_VOICE_ONLY_PROTOCOL`` (the same donors,
        their appearance draws too) and ``ORACLE_VOICE_MEAN_PROTOCOL`` (the pixel mean of
        ``oracle.MEAN_DRAWS`` voice-only faces). ``{"results": {protocol: ...}, "samples":
        {protocol: faces of the first run}, "figures": {protocol: ...}}``; ``None`` unless the
        data is the procedural corpus. ``progress`` (a ``Progress`` of ``oracle_runs``
        total), as for ``evaluate``, advances once per run: the oracle is scored like a
        model, so on a slow machine it takes minutes."""
        info = oracle.procedural_identities(self.config.data_dir, self.config.split,
                                            self.split.names)
        if info is None:
            return None
        seed, identities, quality = info["seed"], info["identities"], info["quality"]
        runs = self.config.runs
        donors = oracle.donor_draws(info["donor_range"], len(identities), runs,
                                    self.config.seed)
        # The mean's donors: their own reproducible draw, MEAN_DRAWS rows per run.
        mean_donors = oracle.donor_draws(info["donor_range"], len(identities),
                                         runs * oracle.MEAN_DRAWS, self.config.seed + 1)
        kinds = {
            ORACLE_PROTOCOL: lambda r: oracle.oracle_faces(
                seed, identities, donors[r], self.image_size, quality),
            ORACLE_VOICE_ONLY_PROTOCOL: lambda r: oracle.oracle_faces(
                seed, identities, donors[r], self.image_size, quality, voice_only=True),
            ORACLE_VOICE_MEAN_PROTOCOL: lambda r: oracle.mean_faces(
                seed, identities,
                mean_donors[r * oracle.MEAN_DRAWS:(r + 1) * oracle.MEAN_DRAWS],
                self.image_size, quality),
        }
        assert tuple(kinds) == self.ORACLE_PROTOCOLS

        def drawn(draw):
            for r in range(runs):
                yield pixels_to_normalized(draw(r)).numpy()
                if progress:
                    progress.update()

        out = {"results": {}, "samples": {}, "figures": {}}
        for protocol, draw in kinds.items():
            results, figures, first = self.score_runs_with_figures(drawn(draw))
            out["results"][protocol], out["samples"][protocol] = results, first
            if figures:
                out["figures"][protocol] = figures
        return out

    def voice_typicality(self, generator) -> VoiceTypicality:
        """How typical each identity's voice is of the voices ``generator`` was trained on:
        exactly the exported model's ``voice_typicality`` output, from the same code
        (``keras_sf2f.serving``): the bank and calibration of
        ``savedmodel.typicality_reference`` on this data's training and validation identities,
        and ``FaceFromVoice.embed`` / ``voice_typicality`` of the identity's first
        ``max_windows`` windows (the "all windows" input; fused by the attention fuser, or
        averaged and re-normalised without one, as the export does). Never raises: without
        a training split (or on any failure) ``values`` is None and ``reason`` says why."""
        # Lazy: the serving package (and TF-Serving's protos) only when typicality is asked for.
        from keras_sf2f.serving import savedmodel  # noqa: PLC0415
        from keras_sf2f.serving.inference import (  # noqa: PLC0415
            DEFAULT_TYPICALITY_WARNING_BELOW, FaceFromVoice, ServingConfig)

        threshold = DEFAULT_TYPICALITY_WARNING_BELOW
        try:
            serving = ServingConfig(max_windows=self.config.max_windows)
            data_dir, val_split, reason = savedmodel._typicality_data(  # noqa: SLF001
                self.config.data_dir, {}, None)
            if data_dir is None:
                return VoiceTypicality(None, threshold, reason)
            logging.info("voice typicality: embedding the training and %s identities of %s",
                         val_split, data_dir)
            reference = savedmodel.typicality_reference(generator, data_dir, serving,
                                                        val_split, threshold)
            module = FaceFromVoice(generator, serving, reference)
            capacity = module.config.window_capacity
            values = np.full([self.split.num_identities], np.nan, np.float32)
            for start in range(0, self.split.num_identities, self.config.batch_size):
                stop = min(start + self.config.batch_size, self.split.num_identities)
                segs, masks = zip(*[
                    (s.numpy(), m.numpy()) for s, m in (
                        pipelines.identity_windows(self.split, tf.constant(i, tf.int64),
                                                   max_windows=capacity)
                        for i in range(start, stop))])
                # A log-mel model beside a voice-quality one reads the first channels.
                segs, masks = np.stack(segs)[..., :module.num_mel_bins], np.stack(masks)
                has = masks.any(axis=1)
                if has.any():
                    embedding = module.embed(tf.constant(segs[has]), tf.constant(masks[has]))
                    values[start + np.flatnonzero(has)] = \
                        module.voice_typicality(embedding).numpy()
        except savedmodel.ExportError as e:
            return VoiceTypicality(None, threshold, str(e))
        except Exception as e:  # noqa: BLE001 - the report must not fail for it
            logging.exception("voice typicality failed")
            return VoiceTypicality(None, threshold, f"failed: {type(e).__name__}: {e}")
        info = module.typicality_metadata()
        info.pop("file", None)  # the export's calibration file: there is none here
        info["fusion"] = module.metadata()["audio_pipeline"]["fusion"]
        info["windows_per_identity"] = capacity
        return VoiceTypicality(values, threshold, "", info)

    def evaluate(self, face_generator: FaceGenerator, progress=None, *,
                 typicality: bool = True) -> dict:
        """``{"results": {protocol: {embedder: {metric: {mean, variance, runs}}}}, "samples":
        {protocol label: first run's faces}, "figures": {protocol: {figure: {mean, variance,
        runs}}}}`` (figures empty unless the config asks for them). ``samples`` is a
        ``FaceSamples``: it also keeps every lower resolution of the pictured identities'
        faces from the same forward pass."""
        results, figures = {}, {}
        samples = FaceSamples(has_fuser=face_generator.has_fuser)
        pictured = min(self.config.grid_identities, self.split.num_identities)

        def keep_resolutions(label, per_resolution):
            # Every resolution of the pictured identities, for the report (the largest is
            # the scored array itself).
            samples.resolutions[label] = {int(x.shape[1]): x[:pictured]
                                          for x in per_resolution[:-1]}
            return per_resolution[-1]

        for d, crops in self.crops.items():
            label = f"{d:g} s"

            def runs(crops=crops, label=label):
                for r in range(self.config.runs):
                    if r == 0:
                        yield keep_resolutions(label, face_generator.from_crops(
                            crops[:, r], all_resolutions=True))
                    else:
                        yield face_generator.from_crops(crops[:, r])
                    if progress:
                        progress.update()

            protocol = f"crops_{d:g}s"
            results[protocol], figures[protocol], samples[label] = \
                self.score_runs_with_figures(runs())
        if self.config.fuser_protocol:
            segs, masks = [], []
            for i in range(self.split.num_identities):
                s, m = pipelines.identity_windows(self.split, tf.constant(i, tf.int64),
                                                  max_windows=self.config.max_windows)
                segs.append(s.numpy())
                masks.append(m.numpy())
            images = keep_resolutions("all windows", face_generator.from_windows(
                np.stack(segs), np.stack(masks), all_resolutions=True))
            samples["all windows"] = images
            results["fuser_all_windows"], figures["fuser_all_windows"], _ = \
                self.score_runs_with_figures([images])
        # typicality=False for models whose typicality no page or report shows (the untrained
        # baseline): it costs one pass over the training split.
        if self.config.typicality and typicality:
            samples.typicality = self.voice_typicality(face_generator.generator)
        return {"results": results, "samples": samples,
                "figures": {k: v for k, v in figures.items() if v}}


# -- loading ---------------------------------------------------------------------------------

def make_embedders(face_network: str, use_dlib: bool = True) -> tuple:
    """``([embedders], [report notes])``: the project's face-identity network first (the one
    training validates with), then dlib's recogniser on whole pictures and on aligned chips
    when asked for and installed."""
    face_net = FaceNetEmbedder.from_path(face_network, name="face_identity_net")
    embedders = [face_net]
    notes = [f"`face_identity_net`: the project's face-identity network from "
             f"`{face_network}` (trained on identities disjoint from every voice-face "
             f"identity)."]
    if use_dlib and dlib_available():
        embedders.append(DlibEmbedder())
        notes.append("`dlib_resnet`: dlib's pretrained 128-D ResNet face recogniser "
                     "(face_recognition_models, CC0); no part of training has seen it. It "
                     "is given the whole picture as its 150 px chip.")
        # The same recogniser on dlib's stock aligned chips: how someone checking the faces
        # from outside would use it; the two protocols rank seeds differently.
        embedders.append(DlibEmbedder(name="dlib_aligned", align=True))
        notes.append("`dlib_aligned`: the same recogniser on dlib's stock aligned chips "
                     "(HOG face box on a 256 px upscale, or the whole picture when none is "
                     "found; 5 landmarks; `get_face_chip`, 150 px, padding 0.25).")
    return embedders, notes


def classifier_centroids(data_dir: str, embedder, image_size: int) -> tuple:
    """``({embedder name: centroids}, note)`` for the VGGFace-style score: the face-identity
    network's own (faceid) identities; empty with a note when the split is missing."""
    try:
        faceid = table.load_split(data_dir, "faceid", require_utterances=False)
    except (table.DataError, FileNotFoundError) as e:
        return {}, f"No VGGFace-style score: {e}"
    faces, labels = zip(*pipelines.faces_dataset(faceid, image_size=image_size)
                        .as_numpy_iterator())
    centroids = metrics.ground_truth_embeddings(
        embedder.embed(np.stack(faces)), np.asarray(labels), faceid.num_identities)
    return {embedder.name: centroids}, (
        f"VGGFace-style score: softmax of {CLASSIFIER_LOGIT_SCALE:g}·cos against the centroids "
        f"of the face-identity network's {faceid.num_identities} training identities, "
        f"5 splits.")


def model_config_for_checkpoint(checkpoint_dir: str) -> tuple:
    """``(ModelConfig, source path)`` a checkpoint was trained with, or ``(None, None)``: its
    run's ``flags.cfg``, else its ``train_config.json`` (``keras_sf2f.runs``;
    the directory or the one above it, for training's ``best_<metric>/``)."""
    return run_files.model_config_for_checkpoint(checkpoint_dir)


def load_generator(checkpoint_dir: str, model_config) -> tuple:
    """``(generator, checkpoint prefix, step)`` restored from a checkpoint directory or
    prefix (``keras_sf2f.runs.restore_generator``: every variable matched both ways)."""
    prefix = run_files.find_checkpoint(checkpoint_dir)
    generator = run_files.restore_generator(model_config, prefix)
    return generator, prefix, checkpoint_step(prefix)


# -- report ---------------------------------------------------------------------------------


def _wrap(text: str, width: float, draw) -> list:
    """``text`` as lines no wider than ``width`` pixels where words allow."""
    lines = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _save_png(path: str, picture) -> None:
    with files.atomic_write(path, "wb") as f:
        picture.save(f, format="PNG")


#: Report grids show every face at least this large (nearest-neighbour upscaling).
MIN_CELL = 128


def grid_cell(size: int, cell: int = MIN_CELL) -> int:
    """The side a ``size`` px face is shown at in the report's grids: at least ``cell``."""
    return max(int(size), int(cell))


def upscale_caption(size: int, cell: int | None = None) -> str:
    """Words for a caption: how ``size`` px faces are shown (empty when at their own size)."""
    cell = grid_cell(size) if cell is None else cell
    if cell == size:
        return ""
    return (f"The models draw {size} px faces; they are shown at {cell} px with "
            f"nearest-neighbour upscaling (each pixel a {cell // size}x{cell // size} block, "
            f"nothing smoothed).")


def write_grid(path: str, columns: dict, names: list, n: int, cell: int = MIN_CELL) -> None:
    """Rows = identities; columns = ground truth then each model/duration. Faces are shown at
    ``grid_cell(size, cell)`` px, nearest-neighbour (a 64 px face as 2x2 blocks)."""
    titles = list(columns)
    size = next(iter(columns.values())).shape[1]
    shown = grid_cell(size, cell)
    pad, label_w, line_h = 6, 100, 12
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    # Titles wrap at word boundaries to the column width ("voice-attribute oracle drawn").
    wrapped = [_wrap(t, shown + pad - 2, measure) for t in titles]
    head = 6 + line_h * max(len(lines) for lines in wrapped)
    w = label_w + len(titles) * (shown + pad)
    h = head + n * (shown + pad)
    sheet = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(sheet)
    for j, lines in enumerate(wrapped):
        for k, line in enumerate(lines):
            draw.text((label_w + j * (shown + pad), 2 + k * line_h), line, fill=(0, 0, 0))
    for i in range(n):
        y = head + i * (shown + pad)
        draw.text((2, y + shown // 2 - 6), names[i][-16:], fill=(0, 0, 0))
        for j, t in enumerate(titles):
            picture = Image.fromarray(normalized_to_uint8_np(columns[t][i:i + 1])[0])
            if shown != size:
                picture = picture.resize((shown, shown), Image.NEAREST)
            sheet.paste(picture, (label_w + j * (shown + pad), y))
    _save_png(path, sheet)


def protocol_input_label(sample_label: str, max_windows: int = 20) -> str:
    """How much speech a sample set (``Evaluator.evaluate``'s ``samples`` keys: "1.25 s",
    "5 s", "all windows") was made from, for figure captions."""
    if sample_label == "all windows":
        return f"all windows (up to {max_windows} x 1.25 s)"
    return sample_label


def figure1_file_name(sample_label: str) -> str:
    """"1.25 s" -> figure1_1.25s.png, "all windows" -> figure1_all_windows.png."""
    text = "all_windows" if sample_label == "all windows" else sample_label.replace(" ", "")
    return f"figure1_{re.sub(r'[^0-9A-Za-z._-]+', '_', text)}.png"


def write_figure1(path: str, ground_truth: np.ndarray, columns: dict, names: list,
                  input_label: str, note: str | None = None, cell: int = 128) -> None:
    """The seed's Figure 1 layout: identities (a), (b), ... in two side-by-side groups; each
    row is ground truth | one column per model (e.g. SF2F | voice2face), captioned with the
    identity and how much speech the faces were made from.

    Args:
      ground_truth: uint8 ``[n, S, S, 3]``; columns: {title: uint8 [n, S, S, 3]} in order.
      note: a line under the figure (e.g. why a column is missing).
      cell: pictures are shown at least this large (``grid_cell``: nearest-neighbour, so
        pixels stay honest; a larger face keeps its own size).
    """
    n = len(ground_truth)
    cell = grid_cell(ground_truth.shape[1], cell)
    titles = ["Ground truth"] + list(columns)
    images = [ground_truth] + [columns[t] for t in columns]
    groups = 2 if n > 4 else 1
    rows = math.ceil(n / groups)
    pad, caption, title_h, head_h = 8, 14, 22, 16
    group_w = len(titles) * cell + (len(titles) - 1) * 2
    title = f"Input speech: {input_label} (held-out identities)"
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(measure.textlength(t) for t in [title] + ([note] if note else []))
    width = max(pad + groups * (group_w + 2 * pad), int(math.ceil(text_w)) + 2 * pad)
    row_h = cell + caption + pad
    height = title_h + head_h + rows * row_h + (16 if note else 0) + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 4), title, fill=(0, 0, 0))
    short = "all windows" if input_label.startswith("all windows") else input_label
    for g in range(groups):
        x0 = pad + g * (group_w + 2 * pad)
        for j, t in enumerate(titles):
            draw.text((x0 + j * (cell + 2), title_h), t, fill=(0, 0, 0))
        for r in range(rows):
            i = g * rows + r
            if i >= n:
                break
            y = title_h + head_h + r * row_h
            for j, imgs in enumerate(images):
                picture = Image.fromarray(imgs[i]).resize((cell, cell), Image.NEAREST)
                sheet.paste(picture, (x0 + j * (cell + 2), y))
            # Short enough for the narrowest group (two 128 px pictures).
            draw.text((x0, y + cell + 1), f"({chr(ord('a') + i)}) {names[i][-16:]}, {short}",
                      fill=(60, 60, 60))
    if note:
        draw.text((pad, height - pad - 12), note, fill=(150, 0, 0))
    _save_png(path, sheet)


def metric_keys(ks) -> list:
    return ["cosine_similarity", "l1_distance", "l2_distance"] + [f"recall@{k}" for k in ks] + \
        ["vggface_score"]


def markdown_table(results_by_model: dict, embedder: str, ks) -> str:
    keys = metric_keys(ks)
    lines = ["| model | protocol | " + " | ".join(keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for model, res in results_by_model.items():
        for protocol, per_embedder in res.items():
            if embedder in per_embedder:
                cells = [metrics.format_summary(per_embedder[embedder], k) for k in keys]
                lines.append(f"| {model} | {protocol} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summaries(summary_dir: str, results_by_model: dict, steps_by_model: dict,
                    training_embedder: str, figures_by_model: dict | None = None) -> list:
    """Metrics as TensorBoard scalars beside training's validation curves.

    One run per model and protocol (``<summary_dir>/<model>/<protocol>``), at the step of the
    evaluated checkpoint. Tag names come from ``keras_sf2f.evaluation.summaries``, shared with
    training: the embedder training validates with gets training's own tags
    (``Validation/cosine_similarity``, ``Validation/recall_at_10``, ...), so a TensorBoard
    pointed at a directory holding both the model_dir and the summary_dir draws the evaluation
    points on the validation charts; other embedders get ``Validation_<embedder>/...``,
    standard deviations over runs ``Validation_std/...`` (``Validation_<embedder>_std/...``).
    The face figures (``figures_by_model``: detection rate, diversity, attribute reader) go
    under ``Validation_faces/...``. Returns the run directories written.
    """
    written = []
    rows = {}
    for model, res in results_by_model.items():
        for protocol, per_embedder in res.items():
            rows.setdefault((model, protocol), {}).update(
                {summary_tags.embedder_group(e, training_embedder): v
                 for e, v in per_embedder.items()})
    for model, protocols in (figures_by_model or {}).items():
        for protocol, values in protocols.items():
            if values:
                rows.setdefault((model, protocol), {})[summary_tags.FACE_FIGURES_GROUP] = values
    for (model, protocol), groups in rows.items():
        step = int(steps_by_model.get(model, 0))
        run_dir = os.path.join(summary_dir, re.sub(r"[^0-9A-Za-z._-]+", "_", model), protocol)
        writer = tf.summary.create_file_writer(run_dir)
        with writer.as_default(step=step):
            for group, values in groups.items():
                for name, cell in values.items():
                    tf.summary.scalar(summary_tags.validation_tag(name, group), cell["mean"])
                    if cell["runs"] > 1:
                        std = summary_tags.std_group(group)
                        tf.summary.scalar(summary_tags.validation_tag(name, std),
                                          math.sqrt(cell["variance"]))
        writer.flush()
        writer.close()
        written.append(run_dir)
    return written


def write_report(report_dir: str, config: EvaluationConfig, evaluator: Evaluator,
                 results_by_model: dict, samples_by_model: dict, notes: list,
                 figure_columns: list | None = None, summary_dir: str | None = None,
                 figures_by_model: dict | None = None, results_page: bool = True,
                 checkpoints: dict | None = None) -> str:
    """Writes report.md, faces.png, figure1_*.png, samples.npz, metrics.json and the results
    page index.html (``results_page.py``: faces beside the speech they were made from, the
    metric tables; with its audio/ and images/).

    Args:
      samples_by_model: {model: {protocol label: generated images of every identity}}
        (``Evaluator.evaluate``'s ``FaceSamples``, whose lower resolutions the page and
        samples.npz also keep; a plain dict gives the largest resolution only).
      figure_columns: the Figure-1 columns after the ground truth, ``[(title, model name or
        None, why it is missing)]``, e.g. ``[("SF2F", "SF2F", None), ("voice2face", None,
        "no --baseline_checkpoint_dir")]``; columns without samples are left out and the
        figure says why. Default: one column per model with samples.
      summary_dir: where write_summaries put the TensorBoard scalars (named in the report).
      figures_by_model: {model: {protocol: {figure: {mean, variance, runs}}}}, the face
        figures (``Evaluator.evaluate``'s "figures", ``ground_truth_figures``, the oracle's):
        detection rate, diversity and collapse, attribute reader (``face_report.py``).
      results_page: write index.html (the ablation runner writes one page for all its
        variants instead of one per variant).
      checkpoints: {model: (checkpoint prefix, step)} for the page's header; default: read
        from the notes (``"`SF2F`: checkpoint `<prefix>` (step N)."``).
    """
    figures_by_model = {m: p for m, p in (figures_by_model or {}).items() if p}
    os.makedirs(report_dir, exist_ok=True)
    n = min(config.grid_identities, evaluator.split.num_identities)
    first = evaluator.first_faces
    names = list(evaluator.split.names)
    columns = {"ground truth": evaluator.faces[first]}
    for model, samples in samples_by_model.items():
        for protocol, images in samples.items():
            columns[f"{model} {protocol}"] = images
    grid = os.path.join(report_dir, "faces.png")
    write_grid(grid, columns, names, n)

    ground_truth = normalized_to_uint8_np(evaluator.faces[first[:n]])
    saved = {"names": np.asarray(names[:n]), "ground_truth": ground_truth}
    for model, samples in samples_by_model.items():
        for protocol, images in samples.items():
            saved[f"{model}|{protocol}"] = normalized_to_uint8_np(images[:n])
            for size, lower in sample_resolutions(samples, protocol, n).items():
                if size != images.shape[1]:
                    saved[page.RESOLUTION_KEY.format(model=model, label=protocol,
                                                     size=size)] = normalized_to_uint8_np(lower)
        typicality = getattr(samples, "typicality", None)
        if typicality is not None:  # the pictured identities' values, for the ablation page
            saved.update(page.typicality_npz(model, typicality, n))
    with files.atomic_write(os.path.join(report_dir, "samples.npz"), "wb") as f:
        np.savez_compressed(f, **saved)

    if figure_columns is None:
        figure_columns = [(model, model, None) for model in samples_by_model]
    present = [(t, m) for t, m, _ in figure_columns if m in samples_by_model]
    missing = [(t, why) for t, m, why in figure_columns if m not in samples_by_model]
    missing_note = ("; ".join(f"no {t} column: {why}" for t, why in missing)
                    if missing else None)
    figures = []
    protocols = list(samples_by_model[present[0][1]]) if present else []
    for protocol in protocols:
        label = protocol_input_label(protocol, config.max_windows)
        name = figure1_file_name(protocol)
        write_figure1(os.path.join(report_dir, name), ground_truth,
                      {t: saved[f"{m}|{protocol}"] for t, m in present
                       if f"{m}|{protocol}" in saved}, names[:n], label, missing_note)
        figures.append((label, name))

    chance_den = evaluator.gallery_size
    chance = {k: min(1.0, k / chance_den) for k in evaluator.recall_ks}
    if evaluator.galleries is None:
        recall_text = (f"Recall: retrieval among all {evaluator.split.num_identities} "
                       f"identities of the split.")
    else:
        ranges = ", ".join(f"[{a}, {b})" for a, b in evaluator.galleries)
        recall_text = (f"Recall: the reference's fixed galleries of 100 identities ({ranges}"
                       + ("" if len(evaluator.galleries) == 3 else
                          f"; the split has {evaluator.split.num_identities} identities, so "
                          f"only these of the reference's three are complete")
                       + "), averaged over galleries.")
    # The metric sections, shared by report.md and the results page (one source).
    metric_lines = [
        f"Split `{config.split}` of `{config.data_dir}`: {evaluator.split.num_identities} "
        f"identities, {evaluator.split.num_faces} face images. "
        f"Crops: {config.runs} runs per duration, one random crop per identity per run "
        f"(seed {config.seed}); values are mean ± standard deviation over runs. "
        f"`fuser_all_windows`: every 125-frame window (at most {config.max_windows}), one run.",
        "",
        f"Ground truth: {'mean of unit embeddings (reference variant)' if config.reference_ground_truth else 'mean of face embeddings, re-normalised (seed)'}. "
        + recall_text + " Chance recall: "
        + ", ".join(f"R@{k} = {v:.3f}" for k, v in chance.items()) + ".",
        ""]
    for e in evaluator.embedders:
        metric_lines += [f"## Embedder: {e.name}", "", markdown_table(
            results_by_model, e.name, evaluator.recall_ks), ""]
    identities = evaluator.split.num_identities
    metric_lines += face_report.sections(figures_by_model, identities, GROUND_TRUTH_MODEL)
    typicality = {m: s.typicality for m, s in samples_by_model.items()
                  if getattr(s, "typicality", None) is not None}
    metric_lines += page.typicality_section(typicality, names)
    parts = ["# Evaluation report", ""]
    if results_page:
        parts += [f"Results page: [{page.PAGE_FILE}]({page.PAGE_FILE}) (open it in a browser: "
                  f"each shown identity's photo, the speech the faces were made from as audio, "
                  f"every model's faces, and these tables).", ""]
    parts += metric_lines
    upscaled = upscale_caption(evaluator.image_size)
    if figures:
        titles = " | ".join(["ground truth"] + [t for t, _ in present])
        parts += ["## Figure 1 layout", "",
                  f"Per identity: {titles}, from the same speech (the first crop of each "
                  f"duration, or all windows)." + (f" Not shown: {missing_note}."
                                                   if missing_note else "")
                  + (f" {upscaled}" if upscaled else ""), ""]
        for label, name in figures:
            parts += [f"Input speech: {label}", "", f"![Figure 1, {label}]({name})", ""]
    parts += ["## Faces", "", "Ground truth, then each model's face from the first crop of "
              "each duration and from all windows." + (f" {upscaled}" if upscaled else ""),
              "", "![faces](faces.png)", ""]
    if summary_dir:
        parts += ["## TensorBoard", "",
                  f"Scalars in `{summary_dir}` under the tags training validates with "
                  f"(`{summary_tags.VALIDATION_GROUP}/...`): `tensorboard --logdir <a directory "
                  f"holding it and the model_dir>`.", ""]
    if notes:
        parts += ["## Notes", ""] + [f"- {x}" for x in notes] + [""]
    path = os.path.join(report_dir, "report.md")
    files.write_text(path, "\n".join(parts))
    with files.atomic_write(os.path.join(report_dir, "metrics.json")) as f:
        json.dump({"config": dataclasses.asdict(config), "results": results_by_model,
                   "embedders": [e.name for e in evaluator.embedders],
                   "recall": {"ks": list(evaluator.recall_ks),
                              "galleries": evaluator.galleries,
                              "gallery_size": evaluator.gallery_size},
                   "figures": [name for _, name in figures],
                   "face_figures": figures_by_model,
                   "voice_typicality": {m: t.to_json(names) for m, t in typicality.items()},
                   "collapse": face_report.collapse_sentences(figures_by_model, identities),
                   "attribute_sentences": face_report.attribute_sentences(
                       figures_by_model, GROUND_TRUTH_MODEL),
                   "face_figure_definitions": {
                       "detection": face_report.DETECTION_TEXT,
                       "diversity": face_report.DIVERSITY_TEXT,
                       "attributes": face_report.ATTRIBUTE_TEXT},
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, f, indent=2)
    if results_page:
        links = [("report.md", "report.md"), ("metrics.json", "metrics.json"),
                 ("faces.png", "faces.png")] + [(name, name) for _, name in figures]
        page.write_evaluation_page(report_dir, config, evaluator, samples_by_model,
                                   metric_lines, notes, figure_columns, links=links,
                                   checkpoints=checkpoints)
    return path
