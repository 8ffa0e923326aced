"""tf.data pipelines over a SplitTable: stage-1 training, fuser windows, evaluation crops.

Every random choice is a stateless function of (seed, step, position), so a pipeline started
at step ``s`` yields exactly the batches an uninterrupted run would have yielded from ``s``:
the "data position" a checkpoint must record is the step itself.

Images come out in the reference's ImageNet-normalised space ((x/255 - mean) / std,
``image_ranges.pixels_to_normalized``), log-mels already normalised by
(x - 10.9915) / 3.1661, as the reference's datasets produce them.
"""

from __future__ import annotations

import tensorflow as tf

from keras_sf2f.audio.features import MEL_PAD_VALUE
from keras_sf2f.data.table import DataError, SplitTable
from keras_sf2f.image_ranges import pixels_to_normalized

# Reference values: stage-1 crops of 100..150 frames (one length per batch),
# fuser windows of 125 frames with stride 125, at most 20 windows per identity.
STAGE1_MIN_FRAMES = 100
STAGE1_MAX_FRAMES = 150
WINDOW_FRAMES = 125
MAX_WINDOWS = 20

# Distinct streams of randomness, folded into the user's seed.
_PERMUTATION, _CROP_LENGTH, _ITEM = 1, 2, 3


def _seed(seed: int, stream: int, *data) -> tf.Tensor:
    s = tf.constant([seed, stream], tf.int64)
    for d in data:
        s = tf.random.experimental.stateless_fold_in(s, tf.cast(d, tf.int64))
    return s


def decode_face(png: tf.Tensor, image_size: int) -> tf.Tensor:
    image = tf.io.decode_png(png, channels=3)
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    return pixels_to_normalized(image)


def _uniform_index(u: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """floor(u * count) for u in [0, 1), clamped for safety against rounding."""
    idx = tf.cast(tf.floor(u * tf.cast(count, tf.float32)), tf.int64)
    return tf.minimum(idx, tf.cast(count, tf.int64) - 1)


def crop_or_pad(table: SplitTable, utterance: tf.Tensor, length: tf.Tensor,
                u: tf.Tensor) -> tf.Tensor:
    """The reference's ``crop_or_pad``: a uniformly placed crop of ``length`` frames, or the
    whole utterance right-padded with the normalised zero when it is shorter."""
    start = table.utt_start[utterance]
    n = table.utt_length[utterance]
    offset = _uniform_index(u, tf.maximum(n - length + 1, 1))
    take = tf.minimum(n, length)
    frames = tf.cast(table.frames[start + offset:start + offset + take], tf.float32)
    pad = tf.fill([length - take, tf.shape(frames)[1]], MEL_PAD_VALUE)
    return tf.concat([frames, pad], axis=0)


def steps_per_epoch(table: SplitTable, batch_size: int) -> int:
    return table.num_identities // batch_size


def _identity_batches(table: SplitTable, batch_size: int, seed: int, start_step: int,
                      num_steps: int | None) -> tf.data.Dataset:
    """Dataset of (step, [batch] identity labels): every identity once per epoch, in a new
    stateless permutation each epoch, incomplete last batches dropped (as the reference)."""
    per_epoch = steps_per_epoch(table, batch_size)
    if per_epoch == 0:
        raise DataError(f"split {table.split!r} has {table.num_identities} identities, fewer "
                        f"than one batch of {batch_size}: lower --batch_size")
    n = table.num_identities
    stop = None if num_steps is None else start_step + num_steps
    steps = tf.data.Dataset.range(start_step, stop if stop is not None else tf.int64.max)

    def identities(step):
        epoch = step // per_epoch
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=_seed(seed, _PERMUTATION, epoch))
        first = (step % per_epoch) * batch_size
        return step, perm[first:first + batch_size]

    return steps.map(identities)


def stage1_dataset(table: SplitTable, *, batch_size: int, image_size: int, seed: int,
                   start_step: int = 0, num_steps: int | None = None,
                   min_frames: int = STAGE1_MIN_FRAMES,
                   max_frames: int = STAGE1_MAX_FRAMES) -> tf.data.Dataset:
    """Stage-1 batches ``(images [B,S,S,3], log_mel [B,T,C], labels [B])``, C the table's
    channels (40 log-mels, or 44 with the voice-quality channels).

    Per batch one crop length T ~ U{min_frames..max_frames}; per identity one random face and
    one random utterance, cropped (or padded) to T frames, as the reference's collate_fn.
    """
    if not 0 < min_frames <= max_frames:
        raise ValueError(f"need 0 < min_frames <= max_frames, got {min_frames}, {max_frames}")

    def make_batch(step, ids):
        length = tf.random.stateless_uniform(
            [], _seed(seed, _CROP_LENGTH, step), minval=min_frames, maxval=max_frames + 1,
            dtype=tf.int64)

        def item(args):
            position, identity = args
            u = tf.random.stateless_uniform([3], _seed(seed, _ITEM, step, position))
            utt = table.id_utt_first[identity] + _uniform_index(u[0], table.id_utt_count[identity])
            face = table.id_face_first[identity] + _uniform_index(u[1],
                                                                  table.id_face_count[identity])
            mel = crop_or_pad(table, utt, length, u[2])
            image = decode_face(table.face_png[image_size][face], image_size)
            return image, mel

        positions = tf.range(tf.shape(ids, out_type=tf.int64)[0])
        images, mels = tf.map_fn(
            item, (positions, ids),
            fn_output_signature=(tf.TensorSpec([image_size, image_size, 3], tf.float32),
                                 tf.TensorSpec([None, table.channels], tf.float32)))
        return images, mels, ids

    ds = _identity_batches(table, batch_size, seed, start_step, num_steps)
    ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def identity_windows(table: SplitTable, identity: tf.Tensor, *, seed_tensor=None,
                     max_windows: int = MAX_WINDOWS, window: int = WINDOW_FRAMES):
    """Up to ``max_windows`` non-overlapping ``window``-frame segments of one identity.

    The reference's ``get_all_mel_segments_of_id``: walk the identity's utterances (in a
    random order and each from a random start when ``seed_tensor`` is given; sorted and from
    frame 0 otherwise), cut ``1 + (len - window) // window`` windows from each, stop at
    ``max_windows``. Returns ``(segments [max_windows, window, channels], mask [max_windows])``;
    rows past the identity's available windows are padding with mask False.
    """
    first = table.id_utt_first[identity]
    count = table.id_utt_count[identity]
    utts = first + tf.range(count)
    if seed_tensor is not None:
        utts = tf.random.experimental.stateless_shuffle(utts, seed=seed_tensor)
        u = tf.random.stateless_uniform([count], tf.random.experimental.stateless_fold_in(
            seed_tensor, 1))
    lengths = tf.gather(table.utt_length, utts)
    if seed_tensor is not None:
        # randint(length - window): a random prefix is dropped when the utterance is longer.
        starts = tf.where(lengths > window, _uniform_index(u, tf.maximum(lengths - window, 1)),
                          tf.zeros_like(lengths))
    else:
        starts = tf.zeros_like(lengths)
    usable = lengths - starts
    n_windows = tf.where(usable >= window, 1 + (usable - window) // window,
                         tf.zeros_like(usable))
    ends = tf.cumsum(n_windows)
    total = tf.minimum(tf.reduce_sum(n_windows), max_windows)
    w = tf.range(max_windows, dtype=tf.int64)
    k = tf.searchsorted(ends, w, side="right", out_type=tf.int64)
    k = tf.minimum(k, count - 1)
    before = tf.gather(ends - n_windows, k)
    frame0 = tf.gather(table.utt_start, tf.gather(utts, k)) + tf.gather(starts, k) \
        + (w - before) * window
    valid = w < total
    frame0 = tf.where(valid, frame0, tf.zeros_like(frame0))
    index = frame0[:, None] + tf.range(window, dtype=tf.int64)[None, :]
    segments = tf.cast(tf.gather(table.frames, index), tf.float32)
    segments = tf.where(valid[:, None, None], segments, MEL_PAD_VALUE)
    return segments, valid


def fuser_dataset(table: SplitTable, *, batch_size: int, image_size: int, seed: int,
                  start_step: int = 0, num_steps: int | None = None,
                  random_start: bool = True, max_windows: int = MAX_WINDOWS):
    """Fuser-training batches ``(images, segments [B,W,125,40], mask [B,W], labels)``."""

    def make_batch(step, ids):
        def item(args):
            position, identity = args
            s = _seed(seed, _ITEM, step, position)
            u = tf.random.stateless_uniform([1], s)
            face = table.id_face_first[identity] + _uniform_index(u[0],
                                                                  table.id_face_count[identity])
            segs, mask = identity_windows(
                table, identity, seed_tensor=tf.random.experimental.stateless_fold_in(s, 7)
                if random_start else None, max_windows=max_windows)
            return decode_face(table.face_png[image_size][face], image_size), segs, mask

        positions = tf.range(tf.shape(ids, out_type=tf.int64)[0])
        images, segs, mask = tf.map_fn(
            item, (positions, ids),
            fn_output_signature=(tf.TensorSpec([image_size, image_size, 3], tf.float32),
                                 tf.TensorSpec([max_windows, WINDOW_FRAMES, table.channels],
                                               tf.float32),
                                 tf.TensorSpec([max_windows], tf.bool)))
        return images, segs, mask, ids

    ds = _identity_batches(table, batch_size, seed, start_step, num_steps)
    ds = ds.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def identity_speech(table: SplitTable, identity: tf.Tensor) -> tf.Tensor:
    """All of an identity's speech frames, its utterances concatenated in sorted order."""
    first = table.id_utt_first[identity]
    count = table.id_utt_count[identity]
    start = table.utt_start[first]
    stop = table.utt_start[first + count - 1] + table.utt_length[first + count - 1]
    return tf.cast(table.frames[start:stop], tf.float32)


def _crop_offsets(n, identity, frames: int, crops_per_identity: int, seed: int, run: int):
    """The first frame of each evaluation crop in an identity's concatenated speech of ``n``
    frames (``evaluation_crops``; one definition for the crops and for where they came from)."""
    u = tf.random.stateless_uniform([crops_per_identity], _seed(seed, _ITEM, run, identity))
    return _uniform_index(u, tf.maximum(n - frames + 1, 1))


def identity_speech_frames(table: SplitTable) -> tf.Tensor:
    """int64 ``[identities]``: how many frames each identity's concatenated speech has."""
    first = table.id_utt_first
    last = first + table.id_utt_count - 1
    return (tf.gather(table.utt_start, last) + tf.gather(table.utt_length, last)
            - tf.gather(table.utt_start, first))


def evaluation_crop_offsets(table: SplitTable, *, frames: int, crops_per_identity: int,
                            seed: int, run: int = 0):
    """int64 ``[identities, crops_per_identity]``: where ``evaluation_crops`` with the same
    arguments cuts each crop, as the first frame in the identity's concatenated speech
    (``identity_speech``). Crop ``c`` of identity ``i`` is frames ``[offset, offset + frames)``
    of that speech, padded past its end."""
    n = identity_speech_frames(table)
    return tf.stack([_crop_offsets(n[i], tf.constant(i, tf.int64), frames, crops_per_identity,
                                   seed, run) for i in range(table.num_identities)]).numpy()


def evaluation_crops(table: SplitTable, *, frames: int, crops_per_identity: int, seed: int,
                     run: int = 0) -> tf.data.Dataset:
    """The seed's protocol: for each identity, ``crops_per_identity`` random crops of
    ``frames`` frames from its speech (utterances concatenated, so a 5 s crop exists even
    when single utterances are shorter). Yields ``(log_mel [crops, frames, channels], label,
    available_frames)``; an identity with less speech than one crop is padded with the
    normalised zero and reports how many frames it had. Deterministic in (seed, run)."""

    def crops(identity):
        speech = identity_speech(table, identity)
        n = tf.shape(speech, out_type=tf.int64)[0]
        offsets = _crop_offsets(n, identity, frames, crops_per_identity, seed, run)
        index = offsets[:, None] + tf.range(frames, dtype=tf.int64)[None, :]
        valid = index < n
        out = tf.gather(speech, tf.minimum(index, n - 1))
        out = tf.where(valid[..., None], out, MEL_PAD_VALUE)
        return out, identity, n

    ids = tf.data.Dataset.range(table.num_identities)
    return ids.map(crops, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def faces_dataset(table: SplitTable, *, image_size: int) -> tf.data.Dataset:
    """Every face image of the split with its label, in table order: ``(image, label)``."""
    labels = tf.repeat(tf.range(table.num_identities, dtype=tf.int64), table.id_face_count)

    def face(i):
        return decode_face(table.face_png[image_size][i], image_size), labels[i]

    return tf.data.Dataset.range(table.num_faces).map(
        face, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
