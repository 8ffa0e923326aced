"""One split of a prepared data directory, held in memory for index-based sampling.

The reference samples per *identity* (one random face and one random utterance of an
identity per item, every identity once per epoch) and cuts up to 20 windows from an
identity's utterances for the fuser. Both need random access by identity, which TFRecord
streams do not give. So the pipelines load a split once into flat tensors:

* all utterances' normalised log-mel frames, concatenated: ``frames`` float16 [F, 40], or
  [F, 44] with the four voice-quality channels after the 40 log-mels when asked for
  (``voice_quality=True``, for a model with ``--voice_quality_channels``);
* per utterance its first frame and length, utterances grouped by identity, sorted by
  utterance id inside an identity (the order the reference's evaluator uses);
* all face PNGs per stored resolution, grouped by identity the same way.

A batch is then a pure function of (seed, step): sampling is stateless, restarts resume
exactly at a step, and there is no shuffle buffer to warm up. Memory: 80 bytes per
10 ms frame, i.e. about 6 GB for HQ-VoxCeleb's 610k 1.25 s segments, 40 MB for the
default embedded corpus. The tensors live in non-trainable CPU variables so that tf.data
graphs capture a handle instead of embedding gigabytes of constants.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import tensorflow as tf

from keras_sf2f.data import records


class DataError(ValueError):
    """A prepared data directory that cannot serve the requested split."""


@dataclasses.dataclass
class SplitTable:
    split: str
    names: list            # identity names; the label of names[i] is i
    frames: tf.Variable    # float16 [total_frames, channels]: 40 log-mels (+ 4 voice quality)
    utt_start: tf.Tensor   # int64 [num_utterances] first frame of each utterance
    utt_length: tf.Tensor  # int64 [num_utterances]
    id_utt_first: tf.Tensor   # int64 [num_identities] first utterance of each identity
    id_utt_count: tf.Tensor   # int64 [num_identities]
    face_png: dict         # image size -> tf.Variable string [num_faces]
    id_face_first: tf.Tensor  # int64 [num_identities]
    id_face_count: tf.Tensor  # int64 [num_identities]
    utterance_ids: list
    image_ids: list
    # Per utterance (same order as utterance_ids): its audio file relative to the dataset
    # root when preparation recorded one (records.Utterance.source_path), else "".
    utterance_sources: list = dataclasses.field(default_factory=list)

    @property
    def channels(self) -> int:
        """Feature channels per frame: 40 log-mels, 44 with the voice-quality channels."""
        return int(self.frames.shape[1])

    @property
    def num_identities(self) -> int:
        return len(self.names)

    @property
    def num_utterances(self) -> int:
        return len(self.utterance_ids)

    @property
    def num_faces(self) -> int:
        return len(self.image_ids)


def _group(labels: np.ndarray, keys: list, num_identities: int):
    """Order items by (label, key); return the order and per-identity first/count."""
    order = sorted(range(len(labels)), key=lambda i: (labels[i], keys[i]))
    sorted_labels = labels[order] if len(order) else labels
    counts = np.bincount(sorted_labels, minlength=num_identities).astype(np.int64)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return order, first, counts


def load_split(data_dir: str, split: str, *, require_utterances: bool = True,
               require_faces: bool = True, voice_quality: bool = False) -> SplitTable:
    """Reads one split of a prepared data directory into a SplitTable.

    ``voice_quality``: append the records' voice-quality channels to the log-mels (a model
    with ``--voice_quality_channels``); without it they are left out, so such data also
    serves a log-mel model. Raises DataError naming the file and the record when a shard
    cannot be read, and when voice quality is asked of data prepared without it."""
    try:
        return _load_split(data_dir, split, require_utterances, require_faces, voice_quality)
    except records.CorruptShardError as e:
        raise DataError(str(e)) from None


def _load_split(data_dir: str, split: str, require_utterances: bool,
                require_faces: bool, voice_quality: bool) -> SplitTable:
    splits = records.read_json(os.path.join(data_dir, records.SPLITS_FILE))
    if split not in splits:
        raise DataError(f"{data_dir}: no split named {split!r} (have: {sorted(splits)})")
    names = list(splits[split])
    n = len(names)
    if n == 0:
        raise DataError(f"{data_dir}: split {split!r} has no identities")

    # Record counts from preparation: a shard cut exactly between records still reads.
    expected = {name: entry.get("records")
                for name, entry in records.recorded_shards(data_dir).items()}
    utt_paths = records.shard_paths(data_dir, split, "utterances")
    labels, keys, mels, sources = [], [], [], []
    for ex in records.read_examples(utt_paths, records.parse_utterance, expected):
        labels.append(int(ex["label"]))
        keys.append(ex["utterance_id"].decode())
        mel = ex["log_mel"].astype(np.float16)
        if voice_quality:
            quality = ex["voice_quality"]
            if quality.shape[0] != mel.shape[0]:
                raise DataError(
                    f"{data_dir}: utterance {keys[-1]} of split {split!r} has no voice-quality "
                    f"channels: the model wants them (--voice_quality_channels); prepare the "
                    f"data again with --voice_quality_channels")
            mel = np.concatenate([mel, quality.astype(np.float16)], axis=1)
        mels.append(mel)
        sources.append(ex["source_path"].decode())
    labels = np.asarray(labels, np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n):
        raise DataError(f"{data_dir}: utterance labels outside 0..{n - 1} in split {split!r}")
    order, id_utt_first, id_utt_count = _group(labels, keys, n)
    lengths = np.asarray([mels[i].shape[0] for i in order], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    frames = (np.concatenate([mels[i] for i in order]) if order
              else np.zeros([0, records.NUM_MEL_BINS + voice_quality * records.NUM_VOICE_QUALITY],
                            np.float16))

    face_paths = records.shard_paths(data_dir, split, "faces")
    flabels, fkeys, pngs = [], [], {s: [] for s in records.IMAGE_SIZES}
    for ex in records.read_examples(face_paths, records.parse_face, expected):
        flabels.append(int(ex["label"]))
        fkeys.append(ex["image_id"].decode())
        for s in records.IMAGE_SIZES:
            pngs[s].append(ex[f"png_{s}"])
    flabels = np.asarray(flabels, np.int64)
    forder, id_face_first, id_face_count = _group(flabels, fkeys, n)

    for what, counts, required in (("utterances", id_utt_count, require_utterances),
                                   ("face images", id_face_count, require_faces)):
        if required and (counts == 0).any():
            empty = [names[i] for i in np.flatnonzero(counts == 0)[:5]]
            raise DataError(f"{data_dir}: {int((counts == 0).sum())} identities of split "
                            f"{split!r} have no {what} (e.g. {', '.join(empty)})")

    with tf.device("/cpu:0"):
        frames_var = tf.Variable(frames, trainable=False, name=f"{split}_frames")
        face_png = {s: tf.Variable(np.asarray([pngs[s][i] for i in forder], dtype=object)
                                   if forder else tf.zeros([0], tf.string),
                                   trainable=False, name=f"{split}_png_{s}")
                    for s in records.IMAGE_SIZES}
    return SplitTable(
        split=split, names=names, frames=frames_var,
        utt_start=tf.constant(starts), utt_length=tf.constant(lengths),
        id_utt_first=tf.constant(id_utt_first), id_utt_count=tf.constant(id_utt_count),
        face_png=face_png,
        id_face_first=tf.constant(id_face_first), id_face_count=tf.constant(id_face_count),
        utterance_ids=[keys[i] for i in order], image_ids=[fkeys[i] for i in forder],
        utterance_sources=[sources[i] for i in order])
