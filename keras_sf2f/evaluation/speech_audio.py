"""The speech behind each pictured face: which frames of which utterances, and their audio.

The evaluation (``evaluate.py``) makes faces from log-mel frames of a split's prepared data:

* ``"<d> s"`` (e.g. ``"1.25 s"``, ``"5 s"``): the first crop of ``round(100 d)`` frames of the
  identity's speech, its utterances concatenated in table order
  (``pipelines.evaluation_crops``; the report pictures run 0, whose crop is crop 0 of
  ``evaluation_crop_offsets``). A crop can span two or more utterances; an identity with too
  little speech is padded with silence frames;
* ``"all windows"``: up to ``max_windows`` non-overlapping 125-frame windows, utterances in
  table order, each from its frame 0 (``pipelines.identity_windows`` without a seed).

This module maps those frames back to pieces of utterances (``Piece``) and cuts the waveform
samples the frames were computed from, so that a report can play exactly that speech.

Frames to samples, and how exact it is. Preparation computes the features of an utterance's
samples after voice activity detection (``prepare._speech_to_normalised_mel``,
``audio.io.speech_log_mel``) with python_speech_features' framing (``audio/features.py``):
frame ``k`` is samples ``[k * hop, k * hop + win)`` (hop 160, win 400 at 16 kHz), the last frame
zero-padded past the end. Frames ``[a, b)`` of an utterance therefore come from samples
``[a * hop, (b - 1) * hop + win)`` (clipped to the utterance's end), and a clip plays exactly
those samples: every sample any of the frames saw, once, nothing else. The log-mel of such a
piece equals the prepared frames except (i) frame ``a``'s pre-emphasis of its first sample,
which used sample ``a * hop - 1`` (outside the piece) when ``a > 0``: one sample of 400 in one
frame, and (ii) the prepared features are stored as float16 (about 3 significant digits).
Frame counts and every other frame are identical (``tests/test_results_page.py`` recomputes
the features of the written audio and compares them with the evaluation's crop). A clip of
several pieces is their concatenation in order (the model saw their frames concatenated too);
``SpeechClip.piece_samples`` gives the joins.

Where the waveform comes from:

* the embedded procedural corpus: regenerated from ``(seed, identity, item)``
  (``procedural.utterance_speech``: synthesis and the same voice activity detection);
* VoxCeleb prepared from raw audio: the file preparation recorded for the utterance
  (``records.Utterance.source_path``, relative to ``dataset.json``'s ``source.root``), read,
  resampled to 16 kHz and passed through the same voice activity detection;
* anything else (mel pickles, data prepared before source paths were recorded, a moved
  dataset root): no audio, and ``SpeechClip.unavailable`` says why.

Either way the regenerated speech must have exactly the prepared number of frames, otherwise
the clip is refused (``unavailable``) rather than played out of step with the faces.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from keras_sf2f.audio import features

#: The rate preparation computes features at (prepare.py, audio/io.py).
SAMPLE_RATE = 16000
WINDOW_FRAMES = 125
FRAME_LENGTH, FRAME_STEP = features.frame_geometry(SAMPLE_RATE)
ALL_WINDOWS = "all windows"


class AudioUnavailable(Exception):
    """No waveform for an utterance; the message says why (shown on the page)."""


@dataclasses.dataclass(frozen=True)
class Piece:
    """Frames ``[first_frame, first_frame + frames)`` of utterance ``utterance`` (its index in
    ``SplitTable.utterance_ids``)."""
    utterance: int
    first_frame: int
    frames: int


@dataclasses.dataclass
class SpeechClip:
    label: str                        # the samples' protocol label: "1.25 s", "all windows"
    pieces: list                      # [Piece], in the order the model saw them
    frames: int                       # frames the model saw (pieces + padding)
    padded_frames: int = 0            # silence frames after the speech (short identities)
    samples: np.ndarray | None = None  # int16 mono at sample_rate, or None
    piece_samples: tuple = ()         # samples of each piece in ``samples``
    sample_rate: int = SAMPLE_RATE
    unavailable: str = ""             # why there is no audio ("" when there is)
    text: str = ""                    # where the speech is from, for a caption


def _identity_utterances(table, identity: int) -> tuple:
    """``(utterance indices, lengths in frames)`` of one identity, in table order."""
    first = int(table.id_utt_first[identity])
    count = int(table.id_utt_count[identity])
    lengths = np.asarray(table.utt_length)[first:first + count]
    return list(range(first, first + count)), [int(x) for x in lengths]


def crop_pieces(table, identity: int, offset: int, frames: int) -> tuple:
    """``(pieces, padded_frames)`` of the crop ``[offset, offset + frames)`` of an identity's
    concatenated speech (``pipelines.identity_speech``)."""
    pieces, position = [], 0
    stop = offset + frames
    utterances, lengths = _identity_utterances(table, identity)
    for u, n in zip(utterances, lengths):
        a, b = max(offset, position), min(stop, position + n)
        if a < b:
            pieces.append(Piece(u, a - position, b - a))
        position += n
    covered = sum(p.frames for p in pieces)
    return pieces, frames - covered


def window_pieces(table, identity: int, max_windows: int,
                  window: int = WINDOW_FRAMES) -> list:
    """The pieces of ``pipelines.identity_windows`` without a seed: utterances in table order,
    ``length // window`` windows from frame 0 of each, at most ``max_windows`` in all; the
    windows of one utterance are adjacent, so they make one piece."""
    pieces, left = [], max_windows
    utterances, lengths = _identity_utterances(table, identity)
    for u, n in zip(utterances, lengths):
        take = min(n // window, left)
        if take > 0:
            pieces.append(Piece(u, 0, take * window))
            left -= take
    return pieces


def sample_range(piece: Piece, num_samples: int) -> tuple:
    """``[start, stop)`` of the samples the piece's frames were computed from."""
    start = piece.first_frame * FRAME_STEP
    stop = (piece.first_frame + piece.frames - 1) * FRAME_STEP + FRAME_LENGTH
    return start, min(stop, num_samples)


class SpeechSource:
    """The waveform of every utterance of a split, regenerated or read (see the module doc)."""

    def __init__(self, data_dir: str, table):
        self.table = table
        self.data_dir = data_dir
        self._cache = {}
        try:
            with open(os.path.join(data_dir, "dataset.json")) as f:
                self.source = json.load(f).get("source", {}) or {}
        except (OSError, ValueError):
            self.source = {}
        self.kind = self.source.get("kind")

    def _regenerate(self, u: int) -> np.ndarray:
        from keras_sf2f.data import procedural  # noqa: PLC0415

        utterance_id = self.table.utterance_ids[u]
        parsed = procedural.parse_utterance_id(utterance_id)
        if parsed is None:
            raise AudioUnavailable(f"utterance id {utterance_id!r} is not a procedural corpus "
                                   f"id")
        rate = int(self.source.get("spec", {}).get("sample_rate", SAMPLE_RATE))
        if rate != SAMPLE_RATE:
            raise AudioUnavailable(f"the corpus was generated at {rate} Hz; features are "
                                   f"framed at {SAMPLE_RATE} Hz")
        identity, item = parsed
        return procedural.utterance_speech(int(self.source["seed"]), identity, item, rate)

    def _read(self, u: int) -> np.ndarray:
        from keras_sf2f.audio import io as audio_io  # noqa: PLC0415
        from keras_sf2f.audio import vad  # noqa: PLC0415

        sources = getattr(self.table, "utterance_sources", None) or []
        relative = sources[u] if u < len(sources) else ""
        if not relative:
            if self.source.get("audio_source") == "mel_pickles":
                raise AudioUnavailable("the data was prepared from mel-spectrogram pickles, "
                                       "which hold no audio")
            raise AudioUnavailable("the prepared data records no audio file for this "
                                   "utterance (prepared before source paths were recorded)")
        root = self.source.get("root") or ""
        path = os.path.join(root, *relative.split("/"))
        if not os.path.isfile(path):
            raise AudioUnavailable(f"{path} (the utterance's source file) is not there")
        try:
            samples = audio_io.load_audio(path, SAMPLE_RATE)
        except audio_io.AudioError as e:
            raise AudioUnavailable(str(e)) from None
        return vad.webrtc_vad(vad.to_int16(samples), SAMPLE_RATE)

    def utterance_samples(self, u: int) -> np.ndarray:
        """int16 samples of utterance ``u`` as its features were computed (after voice
        activity detection); raises ``AudioUnavailable`` with the reason."""
        if u in self._cache:
            value = self._cache[u]
            if isinstance(value, AudioUnavailable):
                raise value
            return value
        try:
            if self.kind == "procedural":
                samples = self._regenerate(u)
            elif self.kind == "voxceleb":
                samples = self._read(u)
            else:
                raise AudioUnavailable("the data is neither the embedded corpus nor VoxCeleb "
                                       "prepared from audio files")
            expected = int(self.table.utt_length[u])
            got = features.num_frames(len(samples), SAMPLE_RATE)
            if got != expected:
                raise AudioUnavailable(
                    f"the regenerated speech of {self.table.utterance_ids[u]} has {got} frames "
                    f"where the prepared data has {expected} (prepared from other audio?)")
            samples = np.asarray(samples, np.int16)
        except AudioUnavailable as e:
            self._cache[u] = e
            raise
        self._cache[u] = samples
        return samples


def _seconds(frames: int) -> str:
    return f"{frames / 100:.2f}"


def describe_pieces(table, pieces: list, padded_frames: int = 0, identity: str = "") -> str:
    """e.g. ``u02 0.37-1.62 s + u03 0.00-0.12 s``: utterance ids (without the identity's
    name ``identity`` in front) and times in the utterance's speech after voice activity
    detection (100 frames per second)."""
    def utterance(u):
        text = table.utterance_ids[u]
        return text[len(identity) + 1:] if identity and text.startswith(identity + "_") \
            else text

    parts = [f"{utterance(p.utterance)} {_seconds(p.first_frame)}–"
             f"{_seconds(p.first_frame + p.frames)} s" for p in pieces]
    text = " + ".join(parts) if parts else "no speech"
    if padded_frames:
        text += f" + {_seconds(padded_frames)} s of silence padding (too little speech)"
    return text


def clip_audio(source: SpeechSource, clip: SpeechClip) -> SpeechClip:
    """Fills ``clip.samples`` (or ``clip.unavailable``) from ``source``."""
    out, lengths = [], []
    try:
        for piece in clip.pieces:
            samples = source.utterance_samples(piece.utterance)
            a, b = sample_range(piece, len(samples))
            out.append(samples[a:b])
            lengths.append(b - a)
    except AudioUnavailable as e:
        clip.unavailable = str(e)
        return clip
    if not out:
        clip.unavailable = "no speech"
        return clip
    clip.samples = np.concatenate(out).astype(np.int16)
    clip.piece_samples = tuple(lengths)
    return clip


def evaluation_pieces(config, table, identities) -> list:
    """For each identity in ``identities`` (labels): ``{label: SpeechClip without audio}`` for
    every protocol of ``config`` (an ``evaluate.EvaluationConfig``): the first crop of each
    duration (what run 0, the pictured samples, was made from) and, with the fuser protocol,
    all windows."""
    from keras_sf2f.data import pipelines  # noqa: PLC0415

    identities = list(identities)
    offsets = {}
    for d in config.durations:
        frames = int(round(d * 100))
        offsets[d] = (frames, pipelines.evaluation_crop_offsets(
            table, frames=frames, crops_per_identity=config.runs, seed=config.seed)[:, 0])
    out = []
    for i in identities:
        clips, name = {}, table.names[i]
        for d, (frames, first) in offsets.items():
            pieces, padded = crop_pieces(table, i, int(first[i]), frames)
            clips[f"{d:g} s"] = SpeechClip(f"{d:g} s", pieces, frames, padded,
                                           text=describe_pieces(table, pieces, padded, name))
        if config.fuser_protocol:
            pieces = window_pieces(table, i, config.max_windows)
            frames = sum(p.frames for p in pieces)
            windows = frames // WINDOW_FRAMES
            clips[ALL_WINDOWS] = SpeechClip(
                ALL_WINDOWS, pieces, frames,
                text=f"{windows} windows: " + describe_pieces(table, pieces, identity=name))
        out.append(clips)
    return out


def evaluation_clips(config, table, identities, data_dir: str | None = None) -> list:
    """``evaluation_pieces`` with the audio of every clip filled in (or why there is none)."""
    source = SpeechSource(data_dir or config.data_dir, table)
    clips = evaluation_pieces(config, table, identities)
    for per_identity in clips:
        for clip in per_identity.values():
            clip_audio(source, clip)
    return clips
