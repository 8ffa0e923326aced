"""The on-disk format of prepared data: TFRecord shards plus two JSON files.

A prepared data directory holds, for each split (``train``, ``val``, ``test`` and, for the
embedded corpus, ``faceid``)::

    <split>-utterances-00000-of-00004.tfrecord   one example per utterance
    <split>-faces-00000-of-00001.tfrecord        one example per face image
    splits.json                                  {split: [identity names, sorted]}
    dataset.json                                 what was prepared: counts, settings, skips,
                                                 and per shard its sha256, size and records

Utterance example: ``identity`` (name), ``label`` (index of the identity in the sorted name
list of its split, as the reference numbers identities), ``utterance_id``, ``num_frames`` and
``log_mel``: the reference-normalised log mel filterbank, float16 little-endian, row-major
``[num_frames, 40]`` (float16 keeps 3 significant digits, far below the spread of the
normalised features, and halves the size). Optional ``source_path``: the audio file the
utterance was read from, relative to the dataset root recorded in ``dataset.json``
(``source.root``), so that a report can play the speech (VoxCeleb from raw audio); absent in
data prepared before it existed and for sources without audio files (mel pickles, the
procedural corpus, which is regenerated from its seed instead): read as ``""``. Optional
``voice_quality``: the standardised voice-quality channels of the same frames
(``keras_sf2f.audio.voice_quality``), float16 little-endian ``[num_frames, 4]``, present when
the data was prepared with ``--voice_quality_channels`` (``dataset.json`` lists the channels
under ``voice_quality_channels``); read as ``[0, 4]`` when absent.

Face example: ``identity``, ``label``, ``image_id`` and one PNG per stored resolution,
``png_64`` and ``png_128`` (RGB, uint8, already aligned). Both resolutions are resized from
the source once, at preparation, with an antialiased bilinear filter as the reference's PIL
``Resize`` does, so training never resizes.

Integrity: TFRecord frames every record with CRCs, so a truncated or damaged shard is found
when it is read; :func:`read_examples` then names the file and the record
(:class:`CorruptShardError`) instead of TensorFlow's bare "truncated record at <offset>".
Preparation records each shard's sha256 in ``dataset.json`` (``shards``), and
:func:`verify_data_dir` (``trainers/prepare_data.py --verify``) re-checks a directory against
it: missing, changed and unexpected shards, and the first unreadable record of a bad one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from typing import Iterable, Iterator

import numpy as np
import tensorflow as tf

from keras_sf2f import files
from keras_sf2f.audio.voice_quality import NUM_CHANNELS as NUM_VOICE_QUALITY

NUM_MEL_BINS = 40
IMAGE_SIZES = (64, 128)
SPLITS_FILE = "splits.json"
DATASET_FILE = "dataset.json"


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _serialize(feature: dict) -> bytes:
    """An Example's bytes, the same in every process: protobuf writes a map (the features) in
    an order that depends on the process's string hashing unless asked to sort it, and the
    shard checksums of dataset.json should say whether two preparations match."""
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


@dataclasses.dataclass(frozen=True)
class Utterance:
    identity: str
    label: int
    utterance_id: str
    log_mel: np.ndarray  # [frames, 40], normalised
    source_path: str = ""  # audio file relative to the dataset root; "" = none recorded
    voice_quality: np.ndarray | None = None  # [frames, 4], standardised; None = not prepared

    def to_example(self) -> bytes:
        mel = np.asarray(self.log_mel, dtype="<f2")
        if mel.ndim != 2 or mel.shape[1] != NUM_MEL_BINS:
            raise ValueError(f"log_mel must be [frames, {NUM_MEL_BINS}], got {mel.shape}")
        feature = {
            "identity": _bytes(self.identity.encode()),
            "label": _int(self.label),
            "utterance_id": _bytes(self.utterance_id.encode()),
            "num_frames": _int(mel.shape[0]),
            "log_mel": _bytes(mel.tobytes()),
        }
        if self.source_path:
            feature["source_path"] = _bytes(self.source_path.encode())
        if self.voice_quality is not None:
            quality = np.asarray(self.voice_quality, dtype="<f2")
            if quality.shape != (mel.shape[0], NUM_VOICE_QUALITY):
                raise ValueError(f"voice_quality must be [{mel.shape[0]}, {NUM_VOICE_QUALITY}] "
                                 f"(one row per log-mel frame), got {quality.shape}")
            feature["voice_quality"] = _bytes(quality.tobytes())
        return _serialize(feature)


@dataclasses.dataclass(frozen=True)
class Face:
    identity: str
    label: int
    image_id: str
    png: dict  # image size -> PNG bytes

    def to_example(self) -> bytes:
        missing = [s for s in IMAGE_SIZES if s not in self.png]
        if missing:
            raise ValueError(f"face {self.image_id}: no PNG for sizes {missing}")
        feature = {
            "identity": _bytes(self.identity.encode()),
            "label": _int(self.label),
            "image_id": _bytes(self.image_id.encode()),
        }
        for size in IMAGE_SIZES:
            feature[f"png_{size}"] = _bytes(self.png[size])
        return _serialize(feature)


UTTERANCE_FEATURES = {
    "identity": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "utterance_id": tf.io.FixedLenFeature([], tf.string),
    "num_frames": tf.io.FixedLenFeature([], tf.int64),
    "log_mel": tf.io.FixedLenFeature([], tf.string),
    # Optional (older data and sources without audio files): "" when absent.
    "source_path": tf.io.FixedLenFeature([], tf.string, default_value=""),
    # Optional (data prepared without --voice_quality_channels): "" when absent.
    "voice_quality": tf.io.FixedLenFeature([], tf.string, default_value=""),
}

FACE_FEATURES = {
    "identity": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
    "image_id": tf.io.FixedLenFeature([], tf.string),
    **{f"png_{s}": tf.io.FixedLenFeature([], tf.string) for s in IMAGE_SIZES},
}


def parse_utterance(serialized: tf.Tensor) -> dict:
    """Parses one utterance example; ``log_mel`` comes back as float32 [frames, 40],
    ``voice_quality`` as float32 [frames, 4] ([0, 4] when the record has none)."""
    ex = tf.io.parse_single_example(serialized, UTTERANCE_FEATURES)
    for key, channels in (("log_mel", NUM_MEL_BINS), ("voice_quality", NUM_VOICE_QUALITY)):
        values = tf.io.decode_raw(ex[key], tf.float16, little_endian=True)
        ex[key] = tf.reshape(tf.cast(values, tf.float32), [-1, channels])
    return ex


def parse_face(serialized: tf.Tensor) -> dict:
    return tf.io.parse_single_example(serialized, FACE_FEATURES)


def shard_paths(data_dir: str, split: str, kind: str) -> list[str]:
    """The shard files of one split and kind ('utterances' or 'faces'), sorted."""
    prefix = f"{split}-{kind}-"
    names = sorted(n for n in os.listdir(data_dir)
                   if n.startswith(prefix) and n.endswith(".tfrecord"))
    return [os.path.join(data_dir, n) for n in names]


class ShardedWriter:
    """Writes serialized examples round-robin into ``num_shards`` files.

    Files are written under a temporary name and renamed when closed, so an interrupted
    preparation never leaves a shard that looks complete.
    """

    def __init__(self, data_dir: str, split: str, kind: str, num_shards: int):
        self.paths = [os.path.join(data_dir, f"{split}-{kind}-{i:05d}-of-{num_shards:05d}.tfrecord")
                      for i in range(num_shards)]
        # One files.atomic_path per shard: each is written as <shard>.partial and renamed into
        # place by close(), or removed when the writer is left with an exception.
        self._shards = contextlib.ExitStack()
        self._writers = [tf.io.TFRecordWriter(self._shards.enter_context(files.atomic_path(p)))
                         for p in self.paths]
        self._next = 0
        self.count = 0
        self.shard_counts = [0] * num_shards

    def write(self, serialized: bytes) -> None:
        self._writers[self._next].write(serialized)
        self.shard_counts[self._next] += 1
        self._next = (self._next + 1) % len(self._writers)
        self.count += 1

    def close(self) -> None:
        for writer in self._writers:
            writer.close()
        self._shards.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc=None, traceback=None):
        if exc_type is None:
            self.close()
        else:  # leave no half-written shard behind under a final name
            for writer in self._writers:
                writer.close()
            self._shards.__exit__(exc_type, exc, traceback)


class CorruptShardError(ValueError):
    """A shard with a record that cannot be read (truncated, damaged or not an example)."""

    def __init__(self, path: str, record: int, detail: str, state: str = "unreadable"):
        self.path, self.record, self.detail = path, record, detail
        data_dir = os.path.dirname(os.path.abspath(path))
        super().__init__(
            f"{path}: record #{record + 1} (counting from 1) is {state}: {detail}. The "
            f"shard is truncated or corrupted; check the whole directory with "
            f"'python trainers/prepare_data.py --verify --data_dir={data_dir}' and prepare "
            f"it again (or restore the file from a copy)")


def _record_error(error: tf.errors.OpError) -> str:
    """TensorFlow's reason without its op context: e.g. 'truncated record at 4995329'."""
    message = error.message or str(error)
    match = re.search(r"(truncated|corrupted) record at (\d+)", message)
    if match:
        return f"{match.group(1)} record at byte {match.group(2)}"
    line = " ".join(message.split())
    return line if len(line) <= 200 else line[:197] + "..."


def read_examples(paths: Iterable[str], parse,
                  expected_records: dict | None = None) -> Iterator[dict]:
    """Eagerly iterates parsed examples as numpy values (tests, tools, table loading), one
    shard after the other so that an unreadable record is reported with its file and position
    (:class:`CorruptShardError`). ``expected_records`` ({file name: count}, from
    :func:`recorded_shards`) also catches a shard cut exactly between two records, which
    reads as a shorter but valid file."""
    expected_records = expected_records or {}
    for path in paths:
        # Deterministic map: examples, and an error, arrive in file order, so the count of
        # examples seen is the position of the record that failed.
        ds = tf.data.TFRecordDataset(path).map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                                               deterministic=True)
        count = 0
        iterator = ds.as_numpy_iterator()
        while True:
            try:
                example = next(iterator)
            except StopIteration:
                break
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
                raise CorruptShardError(path, count, _record_error(e)) from None
            count += 1
            yield example
        expected = expected_records.get(os.path.basename(path))
        if expected is not None and count != expected:
            raise CorruptShardError(
                path, min(count, expected),
                f"the file holds {count} records where preparation wrote {expected}",
                state="missing" if count < expected else "unexpected")


def recorded_shards(data_dir: str) -> dict:
    """{shard file name: {'sha256', 'bytes', 'records'}} as preparation recorded them in
    ``dataset.json``; {} for directories prepared before that (or without dataset.json)."""
    path = os.path.join(data_dir, DATASET_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            return dict(json.load(f).get("shards") or {})
    except (ValueError, AttributeError):
        return {}


def scan_records(path: str) -> tuple:
    """Reads every record of a shard (each checked against its CRCs): ``(number of readable
    records, None)`` or ``(position of the first unreadable record, reason)``."""
    count = 0
    try:
        for _ in tf.data.TFRecordDataset(path):
            count += 1
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        return count, _record_error(e)
    return count, None



def shard_record(path: str, records: int) -> dict:
    """What ``dataset.json`` keeps of a finished shard to re-check it later."""
    return {"sha256": files.sha256(path), "bytes": os.path.getsize(path), "records": records}


_SHARD_NAME = re.compile(r"^.+-(utterances|faces)-\d{5}-of-\d{5}\.tfrecord$")


def verify_data_dir(data_dir: str) -> dict:
    """Re-checks a prepared data directory against what its preparation recorded.

    Returns {'checked': shards checked, 'checksums': whether dataset.json had checksums,
    'problems': [one line per bad shard or file]}. With checksums (``dataset.json`` key
    ``shards``) every shard's size and sha256 are compared, a changed shard is read to find
    its first unreadable record, and shards on disk that the preparation did not write are
    reported (training would read them too). Without (an older preparation) every record of
    every shard is read and CRC-checked instead.
    """
    problems = []
    info = read_json(os.path.join(data_dir, DATASET_FILE))
    try:
        read_json(os.path.join(data_dir, SPLITS_FILE))
    except (FileNotFoundError, ValueError) as e:
        problems.append(f"{os.path.join(data_dir, SPLITS_FILE)}: {e}")
    on_disk = sorted(n for n in os.listdir(data_dir) if _SHARD_NAME.match(n))
    recorded = info.get("shards")

    if recorded is None:
        for name in on_disk:
            path = os.path.join(data_dir, name)
            position, reason = scan_records(path)
            if reason is not None:
                problems.append(f"{path}: record #{position + 1} is unreadable ({reason})")
        return {"checked": len(on_disk), "checksums": False, "problems": problems}
    for name in sorted(recorded):
        expected = recorded[name]
        path = os.path.join(data_dir, name)
        if not os.path.isfile(path):
            problems.append(f"{path}: missing (the preparation wrote it)")
            continue
        size = os.path.getsize(path)
        if size == expected["bytes"] and files.sha256(path) == expected["sha256"]:
            continue
        what = (f"{size} bytes instead of {expected['bytes']}" if size != expected["bytes"]
                else "same size but different content (sha256)")
        position, reason = scan_records(path)
        if reason is not None:
            where = f"; record #{position + 1} of {expected['records']} is unreadable ({reason})"
        elif position != expected["records"]:
            where = (f"; it ends cleanly after {position} of {expected['records']} records "
                     f"(cut between two records)")
        else:
            where = "; every record still reads (changed after preparation)"
        problems.append(f"{path}: {what}{where}")
    for name in on_disk:
        if name not in recorded:
            problems.append(f"{os.path.join(data_dir, name)}: not written by the preparation "
                            f"recorded in {DATASET_FILE} (left from an earlier one?); "
                            f"training would read it too")
    return {"checked": len(recorded), "checksums": True, "problems": problems}



def read_json(path: str):
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: is this a prepared data directory? "
            "Run trainers/prepare_data.py first.")
    with open(path) as f:
        return json.load(f)
