"""Preparation: turn a data source into the TFRecord layout of ``records.py``.

Three sources:

* ``prepare_procedural``: the embedded procedural voice-face corpus (no download).
* ``prepare_voxceleb``: a VoxCeleb1/2 + HQ-VoxCeleb tree in its published layout, read
  from raw audio (VAD and features computed here) or from the reference's mel pickles.

Speech goes through the reference's offline path (webrtcvad, log mel filterbank,
normalisation); faces are resized once to every stored resolution. Files that cannot be
read are skipped and counted; the counts and the first reasons are logged and written
into ``dataset.json``, so nothing disappears silently.
"""

from __future__ import annotations

import collections
import dataclasses
import csv
import io
import json
import multiprocessing
import os
import time
import numpy as np
from absl import logging
from PIL import Image

from keras_sf2f import files
from keras_sf2f.audio import io as audio_io
from keras_sf2f.audio.features import normalize_log_mel
from keras_sf2f.data import records
from keras_sf2f.data import procedural
from keras_sf2f.data.procedural import identity_name
from keras_sf2f.safe_pickle import UnsafePickleError, load_reference_mel
from keras_sf2f.progress import Progress

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a")


class SkipLog:
    """Counts skipped inputs by kind and keeps the first few reasons for the log."""

    def __init__(self, keep: int = 10):
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
                 face_shards: int = 1, source: dict | None = None):
        os.makedirs(output_dir, exist_ok=True)
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
                      source_path: str = "") -> None:
        """``source_path``: the audio file, relative to the dataset root (``source.root``),
        for a report to play the speech; "" when there is none."""
        split = self.split_of[name]
        rec = records.Utterance(name, self.labels[split][name], utterance_id, log_mel,
                                source_path)
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
# The embedded procedural corpus.

def prepare_procedural(output_dir: str, spec, *, num_workers: int = 2, min_frames: int = 100,
                       utterance_shards: int = 4, preview: bool = True) -> dict:
    """Generates the corpus described by ``spec`` (a ``corpus.CorpusSpec``) into records."""
    ranges = spec.splits()
    splits = {name: [identity_name(i) for i in range(a, b)]
              for name, (a, b) in ranges.items()}
    writer = DatasetWriter(output_dir, splits, utterance_shards=utterance_shards,
                           source={"kind": "procedural", "seed": spec.seed,
                                   "spec": dataclasses.asdict(spec),
                                   "ranges": ranges})
    jobs = [(spec, i, records.IMAGE_SIZES) for i in spec.all_identities()]
    progress = Progress(len(jobs), "generating identities", unit="identities",
                        write=logging.info)
    previews = {"faces": [], "face_labels": [], "mels": [], "mel_titles": []}
    pool = (multiprocessing.get_context("spawn").Pool(num_workers) if num_workers > 1 else None)
    try:
        results = (pool.imap(procedural.generate_identity_records, jobs, chunksize=4) if pool
                   else map(procedural.generate_identity_records, jobs))
        for identity, speech, faces in results:
            name = identity_name(identity)
            for item, samples in speech:
                source = f"{name}/utterance{item}"
                try:
                    mel = _speech_to_normalised_mel(samples, source, min_frames)
                except audio_io.AudioError as e:
                    writer.skips.skip("utterance", str(e))
                    continue
                writer.add_utterance(name, procedural.utterance_id(name, item), mel)
                if preview and len(previews["mels"]) < 6 and item == 0:
                    previews["mels"].append(mel)
                    previews["mel_titles"].append(f"{name} utterance 0 ({mel.shape[0]} frames)")
            for item, pngs in faces:
                writer.add_face(name, f"{name}_f{item:02d}", pngs)
                if preview and len(previews["faces"]) < 48 and item == 0:
                    previews["faces"].append(np.array(Image.open(io.BytesIO(pngs[128]))))
                    previews["face_labels"].append(name)
            progress.update()
    except BaseException:
        writer.abort()
        raise
    finally:
        if pool:
            pool.terminate()
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


def prepare_voxceleb(root: str, output_dir: str, *, audio_source: str = "wav",
                     face_type: str = "masked", min_frames: int = 100,
                     utterance_shards: int = 16, face_shards: int = 4,
                     max_utterances_per_identity: int | None = None) -> dict:
    """Prepares a VoxCeleb + HQ-VoxCeleb tree laid out as the reference code reads it.

    ``root`` holds the meta CSVs ``vox1/vox1_meta.csv`` and ``vox2/full_vox2_meta.csv`` and
    optionally ``split.json`` (``{"vox1": {"train": [names], "val": [...], "test": [...]},
    "vox2": {...}}``; without it the reference's rule on CSV rows applies, see
    ``reference_split``).
    ``audio_source='wav'`` reads ``raw_wav/<subset>/{dev,test}/<id>/<clip>/*.wav|m4a`` through
    VAD and features; ``'mel_pickles'`` reads the reference's ``<subset>/mel_spectrograms``
    pickles (safely, see safe_pickle.py). Identities need faces in
    ``<subset>/<face_type>_faces/<Name>/`` and at least one usable utterance.
    """
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

    def face_folder(identity):
        subset, name = identity.split("/", 1)
        return os.path.join(root, subset, f"{face_type}_faces", name)

    available = {k: [n for n in v if speakers.get(n) and os.path.isdir(face_folder(n))]
                 for k, v in splits.items()}
    dropped = sum(len(v) for v in splits.values()) - sum(len(v) for v in available.values())
    if not any(available.values()):
        raise FileNotFoundError(f"{root}: no identity has both speech and "
                                f"{face_type}_faces images")

    # First pass: read everything into memory per identity, so identities that end up with
    # no usable utterance or face can be dropped before labels are assigned.
    skips = SkipLog()
    kept = collections.defaultdict(lambda: {"utterances": [], "faces": []})
    identities = [n for v in available.values() for n in v]
    progress = Progress(len(identities), "reading identities", unit="identities",
                        write=logging.info)
    for identity in identities:
        for folder in speakers[identity]:
            exts = AUDIO_EXTENSIONS if audio_source == "wav" else (".pickle", ".pkl")
            for path in _files(folder, exts):
                if (max_utterances_per_identity
                        and len(kept[identity]["utterances"]) >= max_utterances_per_identity):
                    break
                utt_id = os.path.relpath(path, folder).replace(os.sep, "_")
                try:
                    if audio_source == "wav":
                        mel = audio_io.speech_log_mel(path, min_frames=min_frames)
                    else:
                        mel = normalize_log_mel(load_reference_mel(path)).astype(np.float32)
                        if mel.shape[0] < min_frames:
                            raise audio_io.AudioError(
                                path, f"only {mel.shape[0] / 100:.2f} s of speech; at least "
                                      f"{min_frames / 100:.2f} s ({min_frames} frames) is needed")
                except (audio_io.AudioError, UnsafePickleError) as e:
                    skips.skip("utterance", str(e))
                    continue
                # The audio file relative to root, so that a report can play this speech
                # (keras_sf2f/evaluation/speech_audio.py); pickles have no audio.
                source_path = (os.path.relpath(path, root).replace(os.sep, "/")
                               if audio_source == "wav" else "")
                kept[identity]["utterances"].append((utt_id, np.asarray(mel), source_path))
        for path in _files(face_folder(identity), IMAGE_EXTENSIONS):
            try:
                with Image.open(path) as im:
                    image = np.asarray(im.convert("RGB"))
                pngs = procedural.face_pngs(image, records.IMAGE_SIZES)
            except Exception as e:  # PIL raises many types for corrupt images
                skips.skip("face", f"{path}: unreadable image ({type(e).__name__}: {e})")
                continue
            kept[identity]["faces"].append((os.path.basename(path), pngs))
        progress.update()

    final = {}
    for split, names in available.items():
        final[split] = []
        for n in names:
            if kept[n]["utterances"] and kept[n]["faces"]:
                final[split].append(n)
            else:
                what = "usable utterance" if not kept[n]["utterances"] else "readable face"
                skips.skip("identity", f"{n}: dropped, no {what}")
    writer = DatasetWriter(output_dir, final, utterance_shards=utterance_shards,
                           face_shards=face_shards,
                           source={"kind": "voxceleb", "root": os.path.abspath(root),
                                   "audio_source": audio_source, "face_type": face_type,
                                   "identities_without_data": dropped})
    writer.skips = skips
    try:
        for names in final.values():
            for n in names:
                for utt_id, mel, source_path in kept[n]["utterances"]:
                    writer.add_utterance(n, utt_id, mel, source_path)
                for image_id, pngs in kept[n]["faces"]:
                    writer.add_face(n, image_id, pngs)
    except BaseException:
        writer.abort()
        raise
    info = writer.close()
    # The meta CSVs' Gender column, kept for the evaluation's attribute reader
    # (keras_sf2f/evaluation/attribute_reader.py); a separate file so dataset.json and the
    # records stay as they were.
    with open(os.path.join(output_dir, "identity_attributes.json"), "w") as f:
        json.dump({"gender": {n: genders[n] for names in final.values() for n in names
                              if n in genders},
                   "source": "VoxCeleb meta CSV Gender column: m -> +1, f -> -1"}, f, indent=1)
    return info
