"""Preparation: turn a data source into the TFRecord layout of ``records.py``.

Two sources:

* ``prepare_procedural``: the embedded procedural voice-face corpus (no download).
* ``prepare_voxceleb``: a VoxCeleb1/2 + HQ-VoxCeleb tree in its published layout, read
  from raw audio (VAD and features computed here) or from the reference's mel pickles.

Speech goes through the reference's offline path (webrtcvad, log mel filterbank,
normalisation); faces are resized once to every stored resolution. Files that cannot be
read are skipped and counted; the counts and the first reasons are logged and written
into ``dataset.json``, so nothing disappears silently.

Both sources do their per-item work in spawned worker processes (``parallel_map``, one
pool for both): the corpus generates identities there, VoxCeleb reads them (decode, VAD,
features, face PNGs; its workers import TensorFlow for the features, which otherwise
bound the main process to one core). Results come back in order, so the records do not
depend on the number of workers. VoxCeleb can also be prepared in shards on several
machines and merged (``prepare_voxceleb(shard_index=, num_shards=)``,
``merge_voxceleb_shards``; "Preparing VoxCeleb at scale" in BUILD_NOTES.md).
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import hashlib
import heapq
import io
import json
import multiprocessing
import os
import re
import shutil
import time
from typing import NamedTuple

import numpy as np
from absl import logging
from PIL import Image

from keras_sf2f import files
from keras_sf2f.audio import io as audio_io
from keras_sf2f.audio import voice_quality
from keras_sf2f.audio.features import normalize_log_mel
from keras_sf2f.data import records
from keras_sf2f.data import procedural
from keras_sf2f.data.corpus import SPLIT_NAMES, split_identities
from keras_sf2f.data.procedural import identity_name
from keras_sf2f.safe_pickle import UnsafePickleError, load_reference_mel
from keras_sf2f.progress import Progress

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a")


#: How many skip reasons dataset.json keeps (the counts are complete).
SKIP_EXAMPLES = 10


class SkipLog:
    """Counts skipped inputs by kind and keeps the first few reasons for the log."""

    def __init__(self, keep: int = SKIP_EXAMPLES):
        self.counts = collections.Counter()
        self.examples = []
        self._keep = keep

    def skip(self, kind: str, reason: str) -> None:
        self.counts[kind] += 1
        if len(self.examples) < self._keep:
            self.examples.append(reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def log(self) -> None:
        if not self.total:
            return
        logging.warning("skipped %d inputs: %s", self.total, dict(self.counts))
        for reason in self.examples:
            logging.warning("  skipped: %s", reason)
        if self.total > len(self.examples):
            logging.warning("  ... and %d more (see dataset.json)", self.total - len(self.examples))

    def to_json(self) -> dict:
        return {"counts": dict(self.counts), "first_reasons": self.examples}


class DatasetWriter:
    """Writes the records of every split and, on close, splits.json and dataset.json."""

    def __init__(self, output_dir: str, splits: dict, *, utterance_shards: int = 4,
                 face_shards: int = 1, source: dict | None = None,
                 voice_quality: bool = False):
        os.makedirs(output_dir, exist_ok=True)
        self.voice_quality = voice_quality
        self.output_dir = output_dir
        self.splits = {k: sorted(v) for k, v in splits.items()}
        self.labels = {k: {n: i for i, n in enumerate(v)} for k, v in self.splits.items()}
        self.split_of = {n: k for k, v in self.splits.items() for n in v}
        self._writers = {}
        for split in self.splits:
            self._writers[split, "utterances"] = records.ShardedWriter(
                output_dir, split, "utterances", utterance_shards)
            self._writers[split, "faces"] = records.ShardedWriter(
                output_dir, split, "faces", face_shards)
        self.source = source or {}
        self.per_identity = collections.defaultdict(lambda: [0, 0])
        self.skips = SkipLog()
        self.frames = collections.Counter()

    def add_utterance(self, name: str, utterance_id: str, log_mel: np.ndarray,
                      source_path: str = "", voice_quality: np.ndarray | None = None) -> None:
        """``source_path``: the audio file, relative to the dataset root (``source.root``),
        for a report to play the speech; "" when there is none. ``voice_quality``: the
        frames' voice-quality channels, required when the writer was made with
        ``voice_quality=True``."""
        if self.voice_quality != (voice_quality is not None):
            raise ValueError(f"utterance {utterance_id}: voice-quality channels "
                             f"{'missing' if self.voice_quality else 'not asked for'}")
        split = self.split_of[name]
        rec = records.Utterance(name, self.labels[split][name], utterance_id, log_mel,
                                source_path, voice_quality)
        self._writers[split, "utterances"].write(rec.to_example())
        self.per_identity[name][0] += 1
        self.frames[split] += int(log_mel.shape[0])

    def add_face(self, name: str, image_id: str, pngs: dict) -> None:
        split = self.split_of[name]
        rec = records.Face(name, self.labels[split][name], image_id, pngs)
        self._writers[split, "faces"].write(rec.to_example())
        self.per_identity[name][1] += 1

    def abort(self) -> None:
        for w in self._writers.values():
            w.__exit__(RuntimeError, None, None)

    def close(self) -> dict:
        shards = {}
        for w in self._writers.values():
            w.close()
            # Checksums of the finished files, so that a later copy or a failing disk can be
            # told apart from what was prepared (records.verify_data_dir).
            for path, count in zip(w.paths, w.shard_counts):
                shards[os.path.basename(path)] = records.shard_record(path, count)
        summary = {}
        for split, names in self.splits.items():
            summary[split] = {
                "identities": len(names),
                "utterances": self._writers[split, "utterances"].count,
                "faces": self._writers[split, "faces"].count,
                "speech_seconds": round(self.frames[split] / 100.0, 1),
            }
        info = {"source": self.source, "splits": summary, "skipped": self.skips.to_json(),
                "image_sizes": list(records.IMAGE_SIZES), "mel_bins": records.NUM_MEL_BINS,
                "mel_normalisation": "(logfbank - 10.9915) / 3.1661",
                "voice_quality_channels": list(voice_quality.CHANNELS)
                if self.voice_quality else [],
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "shards": shards}
        files.write_json(os.path.join(self.output_dir, records.SPLITS_FILE), self.splits)
        files.write_json(os.path.join(self.output_dir, records.DATASET_FILE), info)
        self.skips.log()
        return info


def describe(info: dict) -> str:
    """A short human summary of a dataset.json."""
    lines = []
    for split, s in info["splits"].items():
        lines.append(f"  {split:>6}: {s['identities']:5d} identities, {s['utterances']:6d} "
                     f"utterances ({s['speech_seconds']:.0f} s of speech), {s['faces']:6d} faces")
    if info["skipped"]["counts"]:
        lines.append(f"  skipped: {info['skipped']['counts']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Worker processes: the one pool both sources use.

@contextlib.contextmanager
def parallel_map(fn, jobs, num_workers: int, *, initializer=None, chunksize: int = 1):
    """``with parallel_map(fn, jobs, n) as results:`` iterates ``fn(job)`` in job order.

    ``num_workers > 1`` runs ``fn`` in that many *spawned* processes (not forked: the parent
    may hold a TensorFlow runtime, whose threads do not survive a fork); ``fn``, the jobs and
    the results travel by pickle. Results come back in job order whatever the order the
    workers finish in, so the records written from them are the same for any number of
    workers. ``num_workers == 1`` calls ``fn`` in this process (no start-up cost, and
    tracebacks point at the failing line). ``initializer`` runs once in each worker. Leaving
    the block, normally or by an exception, terminates the workers.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    if num_workers == 1:
        yield map(fn, jobs)
        return
    pool = multiprocessing.get_context("spawn").Pool(num_workers, initializer=initializer)
    try:
        yield pool.imap(fn, jobs, chunksize=chunksize)
    finally:
        pool.terminate()
        pool.join()


# --------------------------------------------------------------------------------------------
# The embedded procedural corpus.

def prepare_procedural(output_dir: str, spec, *, num_workers: int = 2, min_frames: int = 100,
                       utterance_shards: int = 4, preview: bool = True,
                       voice_quality_channels: bool = False) -> dict:
    """Generates the corpus described by ``spec`` (a ``corpus.CorpusSpec``) into records;
    ``voice_quality_channels`` also stores each utterance's voice-quality channels."""
    ranges = spec.splits()
    splits = {name: [identity_name(i) for i in split_identities(ranges, name)]
              for name in SPLIT_NAMES}
    writer = DatasetWriter(output_dir, splits, utterance_shards=utterance_shards,
                           source={"kind": "procedural", "seed": spec.seed,
                                   "spec": dataclasses.asdict(spec),
                                   "ranges": ranges},
                           voice_quality=voice_quality_channels)
    jobs = [(spec, i, records.IMAGE_SIZES) for i in spec.all_identities()]
    progress = Progress(len(jobs), "generating identities", unit="identities",
                        write=logging.info)
    previews = {"faces": [], "face_labels": [], "mels": [], "mel_titles": []}
    try:
        with parallel_map(procedural.generate_identity_records, jobs, num_workers,
                          chunksize=4) as results:
            for identity, speech, faces in results:
                name = identity_name(identity)
                for item, samples in speech:
                    source = f"{name}/utterance{item}"
                    try:
                        mel = _speech_to_normalised_mel(samples, source, min_frames)
                    except audio_io.AudioError as e:
                        writer.skips.skip("utterance", str(e))
                        continue
                    quality = (voice_quality.voice_quality_channels(samples).numpy()
                               if voice_quality_channels else None)
                    writer.add_utterance(name, procedural.utterance_id(name, item), mel,
                                         voice_quality=quality)
                    if preview and len(previews["mels"]) < 6 and item == 0:
                        previews["mels"].append(mel)
                        previews["mel_titles"].append(
                            f"{name} utterance 0 ({mel.shape[0]} frames)")
                for item, pngs in faces:
                    writer.add_face(name, f"{name}_f{item:02d}", pngs)
                    if preview and len(previews["faces"]) < 48 and item == 0:
                        previews["faces"].append(np.array(Image.open(io.BytesIO(pngs[128]))))
                        previews["face_labels"].append(name)
                progress.update()
    except BaseException:
        writer.abort()
        raise
    info = writer.close()
    if preview:
        from keras_sf2f.data.corpus import sheets  # noqa: PLC0415
        sheet = os.path.join(output_dir, "faces_contact_sheet.png")
        spectro = os.path.join(output_dir, "spectrograms.png")
        sheets.write_contact_sheet(sheet, previews["faces"], previews["face_labels"], columns=8)
        from keras_sf2f.audio.features import mel_band_centres_hz  # noqa: PLC0415
        sheets.write_spectrogram_png(
            spectro, previews["mels"], previews["mel_titles"],
            band_hz=mel_band_centres_hz(16000, previews["mels"][0].shape[1])
            if previews["mels"] else None,
            value_label="normalised log-mel energy")
        info["previews"] = [sheet, spectro]
    return info


_MEL_FN = None


def _speech_to_normalised_mel(samples: np.ndarray, source: str, min_frames: int) -> np.ndarray:
    """Already-VAD'd int16-scale samples at 16 kHz -> normalised [frames, 40] float32."""
    global _MEL_FN
    import tensorflow as tf  # noqa: PLC0415 - keep worker processes free of TF

    from keras_sf2f.audio.features import log_mel_filterbank  # noqa: PLC0415
    if _MEL_FN is None:
        _MEL_FN = tf.function(lambda w: normalize_log_mel(log_mel_filterbank(w, 16000)),
                              input_signature=[tf.TensorSpec([None], tf.float32)])
    if samples.size == 0:
        raise audio_io.AudioError(source, "nothing left after voice activity detection")
    mel = _MEL_FN(tf.constant(samples.astype(np.float32))).numpy()
    if mel.shape[0] < min_frames:
        raise audio_io.AudioError(
            source, f"only {mel.shape[0] / 100:.2f} s of speech after voice activity detection; "
                    f"at least {min_frames / 100:.2f} s ({min_frames} frames) is needed")
    return mel


# --------------------------------------------------------------------------------------------
# VoxCeleb1/2 + HQ-VoxCeleb in the published layout, as the reference code reads it.

def _read_meta(root: str, genders: dict | None = None) -> dict:
    """Maps (subset, speaker id) -> identity name from the VoxCeleb meta CSVs; fills
    ``genders`` (when given) with ``{"<subset>/<Name>": +1.0 for m, -1.0 for f}`` from the
    Gender column, for the evaluation's attribute reader."""
    mapping = {}
    specs = (("vox1", "vox1_meta.csv", ("VoxCeleb1 ID",), ("VGGFace1 ID", "Name")),
             ("vox2", "full_vox2_meta.csv", ("VoxCeleb2ID", "VoxCeleb2 ID"), ("Name", "VGGFace2 ID")))
    for subset, filename, id_cols, name_cols in specs:
        path = os.path.join(root, subset, filename)
        if not os.path.exists(path):
            continue
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
        delimiter = "\t" if "\t" in text.splitlines()[0] else ","
        rows = list(csv.DictReader(io.StringIO(text), delimiter=delimiter))
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in rows]
        if not rows:
            continue
        id_col = next((c for c in id_cols if c in rows[0]), None)
        name_col = next((c for c in name_cols if c in rows[0]), None)
        if id_col is None or name_col is None:
            raise ValueError(f"{path}: expected columns {id_cols[0]!r} and {name_cols[0]!r}, "
                             f"found {list(rows[0])}")
        for index, r in enumerate(rows):
            mapping[subset, r[id_col]] = (r[name_col], index)
            sign = {"m": 1.0, "f": -1.0}.get(r.get("Gender", "").lower())
            if genders is not None and sign is not None:
                genders[f"{subset}/{r[name_col]}"] = sign
    if not mapping:
        raise FileNotFoundError(
            f"{root}: no vox1/vox1_meta.csv or vox2/full_vox2_meta.csv: not a VoxCeleb tree")
    return mapping


def voxceleb_genders(root: str) -> dict:
    """``{"<subset>/<Name>": +1.0 (m) | -1.0 (f)}`` from a VoxCeleb tree's meta CSVs."""
    genders = {}
    _read_meta(root, genders)
    return genders


def reference_split(meta: dict) -> dict:
    """The reference's split rule by CSV row index: i % 10 == 8 test, 9 val, else train."""
    out = {"train": [], "val": [], "test": []}
    for (subset, _), (name, index) in meta.items():
        split = "test" if index % 10 == 8 else "val" if index % 10 == 9 else "train"
        out[split].append(f"{subset}/{name}")
    return out


def _load_split_json(path: str) -> dict:
    with open(path) as f:
        raw = json.load(f)
    out = {"train": [], "val": [], "test": []}
    for subset, splits in raw.items():
        for split, names in splits.items():
            out.setdefault(split, []).extend(f"{subset}/{n}" for n in names)
    return out


def _files(folder: str, extensions: tuple) -> list:
    found = []
    for dirpath, _, filenames in os.walk(folder):
        found.extend(os.path.join(dirpath, n) for n in filenames
                     if n.lower().endswith(extensions))
    return sorted(found)


@dataclasses.dataclass
class _VoxCelebPlan:
    """What a preparation decides from the tree before reading any audio, identically in
    every shard (it depends on the meta CSVs, ``split.json`` and which folders exist, never
    on the shard): the identities per split, in the split file's order, that have speech
    folders and a face folder; where their speech is; the meta CSVs' genders."""
    root: str
    audio_source: str
    face_type: str
    splits: dict         # split -> identity names, in the order they are read and written
    speakers: dict       # identity -> speech folders (raw_wav/<subset>/<part>/<id>, pickles)
    genders: dict
    without_data: int    # identities of the split file with no speech folder or no faces

    @property
    def order(self) -> list:
        """Every identity in the order they are read: split by split, in split order."""
        return [n for names in self.splits.values() for n in names]

    def face_folder(self, identity: str) -> str:
        subset, name = identity.split("/", 1)
        return os.path.join(self.root, subset, f"{self.face_type}_faces", name)

    def source(self) -> dict:
        """``dataset.json``'s ``source``."""
        return {"kind": "voxceleb", "root": os.path.abspath(self.root),
                "audio_source": self.audio_source, "face_type": self.face_type,
                "identities_without_data": self.without_data}

    def fingerprint(self) -> str:
        """sha256 of the split assignment and each identity's speech folders (relative to the
        root): shards that disagree on it saw different trees (a meta CSV, split.json or a
        folder changed between them) and must not be merged."""
        folders = {n: [os.path.relpath(f, self.root).replace(os.sep, "/")
                       for f in self.speakers[n]] for n in self.order}
        blob = json.dumps({"splits": [[k, v] for k, v in self.splits.items()],
                           "speech_folders": folders}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def _voxceleb_plan(root: str, audio_source: str, face_type: str) -> _VoxCelebPlan:
    if audio_source not in ("wav", "mel_pickles"):
        raise ValueError(f"audio_source must be 'wav' or 'mel_pickles', got {audio_source!r}")
    genders = {}
    meta = _read_meta(root, genders)
    split_path = os.path.join(root, "split.json")
    splits = _load_split_json(split_path) if os.path.exists(split_path) else reference_split(meta)
    speakers = collections.defaultdict(list)  # identity -> speaker folder(s) / pickle folder
    for (subset, spk), (name, _) in meta.items():
        identity = f"{subset}/{name}"
        if audio_source == "wav":
            for part in ("dev", "test"):
                folder = os.path.join(root, "raw_wav", subset, part, spk)
                if os.path.isdir(folder):
                    speakers[identity].append(folder)
        else:
            folder = os.path.join(root, subset, "mel_spectrograms", name)
            if os.path.isdir(folder):
                speakers[identity].append(folder)
    plan = _VoxCelebPlan(root, audio_source, face_type, {}, dict(speakers), genders, 0)
    plan.splits = {k: [n for n in v if speakers.get(n) and os.path.isdir(plan.face_folder(n))]
                   for k, v in splits.items()}
    plan.without_data = sum(len(v) for v in splits.values()) - len(plan.order)
    if not plan.order:
        raise FileNotFoundError(f"{root}: no identity has both speech and "
                                f"{face_type}_faces images")
    return plan


class _IdentityJob(NamedTuple):
    """What a worker needs to read one identity (plain values: it travels by pickle)."""
    identity: str
    speech_folders: tuple
    face_folder: str
    root: str
    audio_source: str
    min_frames: int
    max_utterances: int | None
    voice_quality: bool = False


def _init_feature_worker() -> None:
    """Pool initializer: one TensorFlow thread per worker process. The workers already use
    every core between them; TensorFlow's own thread pools (one thread per core each) would
    only make them compete."""
    import tensorflow as tf  # noqa: PLC0415 - the workers compute features with it
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _read_voxceleb_identity(job: _IdentityJob):
    """One identity's usable speech and faces: decode (PyAV or ffmpeg for M4A), VAD, features and
    the face PNGs, all per-item work of the preparation, run in a worker process.

    Returns ``(identity, utterances, faces, skips)``: ``utterances = [(utterance id, log mel
    float16 [frames, 40], source path, voice-quality channels float16 [frames, 4] or None)]``,
    ``faces = [(image id, {size: png})]``, ``skips = [(kind, reason)]`` in the order met.
    The log mel is returned as float16, the precision
    the records store (``records.Utterance`` converts to float16 the same way), which halves
    what travels back and what the main process holds until it writes."""
    utterances, faces, skips = [], [], []
    exts = AUDIO_EXTENSIONS if job.audio_source == "wav" else (".pickle", ".pkl")
    for folder in job.speech_folders:
        for path in _files(folder, exts):
            if job.max_utterances and len(utterances) >= job.max_utterances:
                break
            utt_id = os.path.relpath(path, folder).replace(os.sep, "_")
            try:
                quality = None
                if job.audio_source == "wav":
                    mel = audio_io.speech_log_mel(path, min_frames=job.min_frames,
                                                  voice_quality=job.voice_quality)
                    if job.voice_quality:
                        mel, quality = mel[:, :records.NUM_MEL_BINS], \
                            mel[:, records.NUM_MEL_BINS:].astype(np.float16)
                else:
                    mel = normalize_log_mel(load_reference_mel(path)).astype(np.float32)
                    if mel.shape[0] < job.min_frames:
                        raise audio_io.AudioError(
                            path, f"only {mel.shape[0] / 100:.2f} s of speech; at least "
                                  f"{job.min_frames / 100:.2f} s ({job.min_frames} frames) "
                                  f"is needed")
            except (audio_io.AudioError, UnsafePickleError) as e:
                skips.append(("utterance", str(e)))
                continue
            # The audio file relative to root, so that a report can play this speech
            # (keras_sf2f/evaluation/speech_audio.py); pickles have no audio.
            source_path = (os.path.relpath(path, job.root).replace(os.sep, "/")
                           if job.audio_source == "wav" else "")
            utterances.append((utt_id, np.asarray(mel, np.float32).astype(np.float16),
                               source_path, quality))
    for path in _files(job.face_folder, IMAGE_EXTENSIONS):
        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
            pngs = procedural.face_pngs(image, records.IMAGE_SIZES)
        except Exception as e:  # PIL raises many types for corrupt images
            skips.append(("face", f"{path}: unreadable image ({type(e).__name__}: {e})"))
            continue
        faces.append((os.path.basename(path), pngs))
    return job.identity, utterances, faces, skips


def _read_identities(plan: _VoxCelebPlan, identities: list, *, min_frames: int,
                     max_utterances: int | None, num_workers: int,
                     voice_quality: bool = False) -> dict:
    """identity -> (utterances, faces, skips) of ``_read_voxceleb_identity``, every identity
    read in ``num_workers`` processes. Everything is held in memory until the records are
    written, so that identities left without a usable utterance or face can be dropped
    before labels are assigned: about 60 KB per 8 s utterance (float16 log mel)."""
    jobs = [_IdentityJob(n, tuple(plan.speakers[n]), plan.face_folder(n), plan.root,
                         plan.audio_source, min_frames, max_utterances, voice_quality)
            for n in identities]
    progress = Progress(len(jobs), "reading identities", unit="identities",
                        write=logging.info)
    read, utterances = {}, 0
    with parallel_map(_read_voxceleb_identity, jobs, num_workers,
                      initializer=_init_feature_worker) as results:
        for identity, utts, faces, skips in results:
            read[identity] = (utts, faces, skips)
            utterances += len(utts)
            progress.update(extra=f"{utterances} utterances")
    return read


def _usable(splits: dict, read: dict) -> tuple:
    """``(splits with only the identities that have an utterance and a face, [(identity,
    reason) for each dropped one])``, both in ``splits``' order."""
    final, drops = {}, []
    for split, names in splits.items():
        final[split] = []
        for n in names:
            utterances, faces, _ = read[n]
            if utterances and faces:
                final[split].append(n)
            else:
                what = "usable utterance" if not utterances else "readable face"
                drops.append((n, f"{n}: dropped, no {what}"))
    return final, drops


def _write_identity_attributes(output_dir: str, names, genders: dict) -> None:
    """The meta CSVs' Gender column, kept for the evaluation's attribute reader
    (keras_sf2f/evaluation/attribute_reader.py); a separate file so dataset.json and the
    records stay as they were."""
    with files.atomic_write(os.path.join(output_dir, "identity_attributes.json")) as f:
        json.dump({"gender": {n: genders[n] for n in names if n in genders},
                   "source": "VoxCeleb meta CSV Gender column: m -> +1, f -> -1"}, f, indent=1)


def _write_identities(writer: "DatasetWriter", skips: "SkipLog", final: dict, read: dict) -> dict:
    """Writes the read utterances and faces of ``final``'s identities (split order, then the
    identities' order) and closes the writer; on any failure it aborts (no partial records
    stay) and re-raises. Returns ``writer.close()``'s info."""
    writer.skips = skips
    try:
        for names in final.values():
            for n in names:
                utterances, faces, _ = read[n]
                for utt_id, mel, source_path, quality in utterances:
                    writer.add_utterance(n, utt_id, mel, source_path, quality)
                for image_id, pngs in faces:
                    writer.add_face(n, image_id, pngs)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def prepare_voxceleb(root: str, output_dir: str, *, audio_source: str = "wav",
                     face_type: str = "masked", min_frames: int = 100,
                     utterance_shards: int = 16, face_shards: int = 4,
                     max_utterances_per_identity: int | None = None, num_workers: int = 1,
                     shard_index: int | None = None, num_shards: int | None = None,
                     voice_quality_channels: bool = False) -> dict:
    """Prepares a VoxCeleb + HQ-VoxCeleb tree laid out as the reference code reads it.

    ``root`` holds the meta CSVs ``vox1/vox1_meta.csv`` and ``vox2/full_vox2_meta.csv`` and
    optionally ``split.json`` (``{"vox1": {"train": [names], "val": [...], "test": [...]},
    "vox2": {...}}``; without it the reference's rule on CSV rows applies, see
    ``reference_split``).
    ``audio_source='wav'`` reads ``raw_wav/<subset>/{dev,test}/<id>/<clip>/*.wav|m4a`` through
    VAD and features; ``'mel_pickles'`` reads the reference's ``<subset>/mel_spectrograms``
    pickles (safely, see safe_pickle.py). Identities need faces in
    ``<subset>/<face_type>_faces/<Name>/`` and at least one usable utterance.

    ``num_workers`` processes read the identities (decode, VAD, features, faces); the records
    are the same for any number. With ``shard_index`` and ``num_shards`` only that shard's
    share of the identities is prepared, into ``<output_dir>/shards/<i>-of-<n>/``, and
    :func:`merge_voxceleb_shards` makes the prepared directory once all shards are done
    (see "Preparing VoxCeleb at scale" in BUILD_NOTES.md).
    """
    if voice_quality_channels and audio_source != "wav":
        raise ValueError("voice-quality channels need the waveforms: the reference's mel "
                         "pickles hold only log-mels (use --audio_source=wav)")
    plan = _voxceleb_plan(root, audio_source, face_type)
    options = {"audio_source": audio_source, "face_type": face_type, "min_frames": min_frames,
               "utterance_shards": utterance_shards, "face_shards": face_shards,
               "max_utterances_per_identity": max_utterances_per_identity,
               "voice_quality_channels": voice_quality_channels}
    if shard_index is not None or num_shards is not None:
        return _prepare_voxceleb_shard(plan, output_dir, options, shard_index, num_shards,
                                       num_workers)
    read = _read_identities(plan, plan.order, min_frames=min_frames,
                            max_utterances=max_utterances_per_identity,
                            num_workers=num_workers, voice_quality=voice_quality_channels)
    skips = SkipLog()
    for n in plan.order:
        for kind, reason in read[n][2]:
            skips.skip(kind, reason)
    final, drops = _usable(plan.splits, read)
    for _, reason in drops:
        skips.skip("identity", reason)
    writer = DatasetWriter(output_dir, final, utterance_shards=utterance_shards,
                           face_shards=face_shards, source=plan.source(),
                           voice_quality=voice_quality_channels)
    info = _write_identities(writer, skips, final, read)
    _write_identity_attributes(output_dir, [n for v in final.values() for n in v], plan.genders)
    return info


# --------------------------------------------------------------------------------------------
# Sharding the VoxCeleb preparation across machines.
#
# Every shard computes the same plan (split assignment, global identity order) from the tree
# and takes every n-th identity of the global order; identities are disjoint between shards
# and together are all of them. A shard writes only under shards/<i>-of-<n>/ of the output
# directory: one utterance and one face file per split, with shard-local labels (a shard
# directory is itself a prepared directory that --verify can check), and last, atomically,
# shard.json: the completion mark, with the options, the plan's fingerprint and what the
# merge needs (kept and dropped identities, skip counts and first reasons, genders, record
# counts). The merge re-numbers labels over all shards, which only it can do (labels index
# the split's sorted list of identities that ended up with data), so it rewrites each record
# once, in the unsharded run's order: the output is byte-identical to an unsharded run's.

SHARDS_DIR = "shards"
SHARD_MANIFEST = "shard.json"
SHARD_FORMAT = 1
_SHARD_DIR_NAME = re.compile(r"^(\d{5})-of-(\d{5})$")


class ShardError(ValueError):
    """Shards that cannot be merged (missing, incomplete, inconsistent) or bad shard flags."""


def shard_dir(output_dir: str, shard_index: int, num_shards: int) -> str:
    """Where shard ``shard_index`` of ``num_shards`` writes: ``<output_dir>/shards/i-of-n``."""
    return os.path.join(output_dir, SHARDS_DIR, f"{shard_index:05d}-of-{num_shards:05d}")


def shard_identities(order: list, shard_index: int, num_shards: int) -> list:
    """Shard ``i``'s identities: every ``num_shards``-th of the global order from ``i``.
    Round robin over the order (split by split, in split-file order) gives each shard about
    the same number of identities of every split and subset."""
    return order[shard_index::num_shards]


def _check_shard_flags(shard_index, num_shards) -> None:
    if shard_index is None or num_shards is None:
        raise ShardError("shard_index and num_shards go together: give both or neither")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ShardError(f"shard_index must be in 0..num_shards-1 = 0..{num_shards - 1}, "
                         f"got shard_index={shard_index} num_shards={num_shards}")


def _prepare_voxceleb_shard(plan: _VoxCelebPlan, output_dir: str, options: dict,
                            shard_index: int, num_shards: int, num_workers: int) -> dict:
    _check_shard_flags(shard_index, num_shards)
    directory = shard_dir(output_dir, shard_index, num_shards)
    manifest_path = os.path.join(directory, SHARD_MANIFEST)
    # A re-run starts from nothing. The completion mark goes first, so that a crash while
    # cleaning up or preparing never leaves a directory the merge would take as complete.
    if os.path.exists(manifest_path):
        os.remove(manifest_path)
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)

    mine = shard_identities(plan.order, shard_index, num_shards)
    position = {n: k for k, n in enumerate(plan.order)}
    logging.info("shard %d of %d: %d of %d identities", shard_index, num_shards, len(mine),
                 len(plan.order))
    read = _read_identities(plan, mine, min_frames=options["min_frames"],
                            max_utterances=options["max_utterances_per_identity"],
                            num_workers=num_workers,
                            voice_quality=options["voice_quality_channels"])
    skips = SkipLog()
    first_reasons = []  # [global position of the identity, reason]: the merge orders by it
    for n in mine:
        for kind, reason in read[n][2]:
            skips.skip(kind, reason)
            if len(first_reasons) < SKIP_EXAMPLES:
                first_reasons.append([position[n], reason])
    reading_counts = dict(skips.counts)
    assigned = set(mine)
    final, drops = _usable({k: [n for n in v if n in assigned] for k, v in plan.splits.items()},
                           read)
    for _, reason in drops:
        skips.skip("identity", reason)
    # One file per split and kind: it holds the identities in the global order, which lets
    # the merge interleave the shards' files in a single streaming pass.
    writer = DatasetWriter(directory, final, utterance_shards=1, face_shards=1,
                           source={**plan.source(), "shard": [shard_index, num_shards]},
                           voice_quality=options["voice_quality_channels"])
    info = _write_identities(writer, skips, final, read)
    kept = [n for v in final.values() for n in v]
    manifest = {
        "format": SHARD_FORMAT, "shard_index": shard_index, "num_shards": num_shards,
        "options": options, "source": plan.source(), "fingerprint": plan.fingerprint(),
        "assignment": [[k, v] for k, v in plan.splits.items()],
        "identities": mine, "kept": kept,
        "dropped": [[position[n], reason] for n, reason in drops],
        "skip_counts": reading_counts, "first_reasons": first_reasons,
        "genders": {n: plan.genders[n] for n in kept if n in plan.genders},
        "records": info["shards"], "created": info["created"],
    }
    files.write_json(manifest_path, manifest)
    done = sum(os.path.isfile(os.path.join(shard_dir(output_dir, i, num_shards), SHARD_MANIFEST))
               for i in range(num_shards))
    info["shard"] = {"index": shard_index, "num_shards": num_shards, "directory": directory,
                     "complete": done}
    return info


def _shard_problems(output_dir: str, num_shards: int) -> tuple:
    """``(manifests of the complete shards, [problem lines])`` for shards 0..n-1."""
    manifests, problems = [], []
    for i in range(num_shards):
        directory = shard_dir(output_dir, i, num_shards)
        rerun = f"run it (again) with --shard_index={i} --num_shards={num_shards}"
        manifest_path = os.path.join(directory, SHARD_MANIFEST)
        if not os.path.isdir(directory):
            problems.append(f"shard {i} of {num_shards} is missing ({directory} does not "
                            f"exist): {rerun}")
            continue
        if not os.path.isfile(manifest_path):
            problems.append(f"shard {i} of {num_shards} is incomplete (no {SHARD_MANIFEST} in "
                            f"{directory}: still running, or interrupted): {rerun}")
            continue
        try:
            with open(manifest_path) as f:
                manifest = json.load(f)
        except ValueError as e:
            problems.append(f"{manifest_path}: unreadable ({e}): {rerun}")
            continue
        if manifest.get("format") != SHARD_FORMAT or manifest.get("shard_index") != i \
                or manifest.get("num_shards") != num_shards:
            problems.append(f"{manifest_path}: not shard {i} of {num_shards} of this version's "
                            f"format: {rerun}")
            continue
        for name, entry in sorted(manifest["records"].items()):
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                problems.append(f"{path}: missing (shard {i} wrote it): {rerun}")
            elif os.path.getsize(path) != entry["bytes"]:
                problems.append(f"{path}: {os.path.getsize(path)} bytes, shard {i} wrote "
                                f"{entry['bytes']}: {rerun}")
        manifests.append(manifest)
    return manifests, problems


def _inconsistencies(manifests: list) -> list:
    """Lines naming each shard made with other options or from another plan than shard 0."""
    first, lines = manifests[0], []
    for m in manifests[1:]:
        i = m["shard_index"]
        differing = [f"{k}={m['options'].get(k)!r} (shard 0: {first['options'].get(k)!r})"
                     for k in sorted(set(first["options"]) | set(m["options"]))
                     if m["options"].get(k) != first["options"].get(k)]
        if differing:
            lines.append(f"shard {i} was prepared with other options than shard 0: "
                         f"{', '.join(differing)}; prepare it again with shard 0's options "
                         f"(or all shards with the new ones)")
        elif m["fingerprint"] != first["fingerprint"] \
                or m["source"]["identities_without_data"] != \
                first["source"]["identities_without_data"]:
            lines.append(f"shard {i} saw another split assignment than shard 0 (the tree's "
                         f"meta CSVs, split.json or speech/face folders differed when it "
                         f"ran); prepare every shard again from the same tree")
    return lines


def _shard_records(directory: str, manifest: dict, split: str, kind: str, position: dict):
    """The records of one split and kind of a shard as ``(global position of the identity,
    serialized example)``, in file order; every record is CRC-checked and the count checked
    against what the shard wrote (records.read_examples)."""
    import tensorflow as tf  # noqa: PLC0415 - protobuf parsing; the workers never get here

    kept = set(manifest["kept"])
    expected = {name: entry["records"] for name, entry in manifest["records"].items()}
    for raw in records.read_examples(records.shard_paths(directory, split, kind),
                                     _unparsed, expected):
        feature = tf.train.Example.FromString(raw).features.feature
        identity = feature["identity"].bytes_list.value[0].decode()
        if identity not in kept:
            raise ShardError(f"{directory}: a {split} {kind} record of {identity!r}, which "
                             f"this shard did not prepare; prepare the shard again")
        yield position[identity], feature


def _unparsed(serialized):
    return serialized


def merge_voxceleb_shards(output_dir: str, *, num_shards: int | None = None,
                          keep_shards: bool = False) -> dict:
    """Merges the complete shards under ``<output_dir>/shards/`` into the prepared layout of
    ``output_dir``: the same records (byte for byte), splits.json, labels and dataset.json
    (but its ``created``) as an unsharded preparation with the same options.

    Refuses (:class:`ShardError`, naming every problem) when a shard of ``0..n-1`` is missing
    or incomplete, a file of one is missing or has another size, or shards were made with
    other options or from another state of the tree. ``num_shards`` is needed only when
    shards of several counts are present. The shard directories are removed after a
    successful merge unless ``keep_shards``.
    """
    shards_root = os.path.join(output_dir, SHARDS_DIR)
    counts = collections.defaultdict(set)
    if os.path.isdir(shards_root):
        for name in os.listdir(shards_root):
            match = _SHARD_DIR_NAME.match(name)
            if match:
                counts[int(match.group(2))].add(int(match.group(1)))
    if not counts:
        raise ShardError(f"{shards_root}: no shards to merge; prepare them first "
                         f"(prepare_data.py --data_source=voxceleb --shard_index=i "
                         f"--num_shards=n --data_dir={output_dir}, for i in 0..n-1)")
    if num_shards is None:
        if len(counts) > 1:
            raise ShardError(f"{shards_root} holds shards of {len(counts)} different shard "
                             f"counts ({', '.join(f'n={n}' for n in sorted(counts))}); pass "
                             f"num_shards to say which to merge and remove the others")
        num_shards = next(iter(counts))
    manifests, problems = _shard_problems(output_dir, num_shards)
    if manifests and not problems:
        problems = _inconsistencies(manifests)
    if problems:
        raise ShardError(f"cannot merge the {num_shards} shards in {shards_root}:\n  "
                         + "\n  ".join(problems))
    first = manifests[0]
    roots = sorted({m["source"]["root"] for m in manifests})
    if len(roots) > 1:
        logging.warning("the shards read the tree at different paths (%s); dataset.json "
                        "records shard 0's, %s", ", ".join(roots), first["source"]["root"])
    assignment = {k: v for k, v in first["assignment"]}
    order = [n for names in assignment.values() for n in names]
    for m in manifests:
        if m["identities"] != shard_identities(order, m["shard_index"], num_shards):
            raise ShardError(f"shard {m['shard_index']} did not prepare its share of the "
                             f"identities; prepare it again")
    position = {n: k for k, n in enumerate(order)}
    kept = {n for m in manifests for n in m["kept"]}
    final = {k: [n for n in v if n in kept] for k, v in assignment.items()}

    # The unsharded run's skip log: reading skips in identity order, then dropped identities.
    skips = SkipLog()
    for m in manifests:
        skips.counts.update(m["skip_counts"])
    dropped = sorted((d for m in manifests for d in m["dropped"]), key=lambda d: d[0])
    if dropped:
        skips.counts["identity"] += len(dropped)
    reasons = sorted((r for m in manifests for r in m["first_reasons"]), key=lambda r: r[0])
    skips.examples = [reason for _, reason in reasons + dropped][:SKIP_EXAMPLES]

    options = first["options"]
    # Shards made before the option existed have no voice-quality channels.
    quality = bool(options.get("voice_quality_channels", False))
    writer = DatasetWriter(output_dir, final, utterance_shards=options["utterance_shards"],
                           face_shards=options["face_shards"], source=first["source"],
                           voice_quality=quality)
    writer.skips = skips
    directories = [shard_dir(output_dir, m["shard_index"], num_shards) for m in manifests]
    progress = Progress(sum(e["records"] for m in manifests for e in m["records"].values()),
                        "merging shards", unit="records", write=logging.info)
    try:
        for split in final:
            for kind in ("utterances", "faces"):
                streams = [_shard_records(d, m, split, kind, position)
                           for d, m in zip(directories, manifests)]
                # Each stream is in global order and the identities are disjoint, so this
                # is the unsharded order; records of one identity keep their file order.
                for _, f in heapq.merge(*streams, key=lambda item: item[0]):
                    identity = f["identity"].bytes_list.value[0].decode()
                    if kind == "utterances":
                        mel = np.frombuffer(f["log_mel"].bytes_list.value[0], "<f2")
                        source = (f["source_path"].bytes_list.value[0].decode()
                                  if "source_path" in f else "")
                        channels = (np.frombuffer(f["voice_quality"].bytes_list.value[0], "<f2")
                                    .reshape(-1, records.NUM_VOICE_QUALITY) if quality else None)
                        writer.add_utterance(
                            identity, f["utterance_id"].bytes_list.value[0].decode(),
                            mel.reshape(-1, records.NUM_MEL_BINS), source, channels)
                    else:
                        writer.add_face(identity, f["image_id"].bytes_list.value[0].decode(),
                                        {s: f[f"png_{s}"].bytes_list.value[0]
                                         for s in records.IMAGE_SIZES})
                    progress.update()
    except BaseException:
        writer.abort()
        raise
    info = writer.close()
    genders = {n: g for m in manifests for n, g in m["genders"].items()}
    _write_identity_attributes(output_dir, [n for v in final.values() for n in v], genders)
    if not keep_shards:
        for directory in directories:
            shutil.rmtree(directory)
        if not os.listdir(shards_root):
            os.rmdir(shards_root)
    info["merged_shards"] = num_shards
    return info
