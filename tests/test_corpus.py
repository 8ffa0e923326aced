"""Tests of the procedural voice-face corpus (keras_sf2f.data.corpus)."""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from keras_sf2f.data import corpus
from keras_sf2f.data.corpus import (EYE_LEFT_128, EYE_RIGHT_128, CorpusSpec,
                                    aligned_eye_positions, default_splits, draw_face,
                                    generate_identity, identity_attributes, mean_f0_hz,
                                    pupil_positions, rng_for, synthesize_utterance,
                                    write_contact_sheet, write_spectrogram_png)
from keras_sf2f.audio.features import mel_band_centres_hz  # noqa: E402
from keras_sf2f.data.corpus.sheets import COLOUR_BAR_WIDTH  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR = 16000
SEED = 7


# ----------------------------------------------------------------------------- helpers

def _mel_filterbank(n_filters=40, n_fft=512, sr=SR):
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    imel = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    bins = np.floor((n_fft + 1) * imel(np.linspace(mel(0), mel(sr / 2), n_filters + 2)) / sr)
    k = np.arange(n_fft // 2 + 1)[None, :]
    lo, mid, hi = bins[:-2, None], bins[1:-1, None], bins[2:, None]
    up = (k - lo) / np.maximum(mid - lo, 1)
    down = (hi - k) / np.maximum(hi - mid, 1)
    return np.where((k >= lo) & (k < mid), up, 0.0) + np.where((k >= mid) & (k < hi), down, 0.0)


_FB_T = np.ascontiguousarray(_mel_filterbank().T)  # [257, 40]


def log_mel(y: np.ndarray) -> np.ndarray:
    """python_speech_features-style logfbank in numpy: [frames, 40]."""
    x = y.astype(np.float64)
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    n = 1 + (len(x) - 400) // 160
    frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::160][:n]
    power = np.abs(np.fft.rfft(frames, 512)) ** 2 / 512.0
    # einsum, not @: a BLAS matmul this small wastes CPU on threads (here 5x the time).
    return np.log(np.maximum(np.einsum("fk,km->fm", power, _FB_T),
                             np.finfo(np.float64).eps))


def estimate_f0(y: np.ndarray, sr: int = SR) -> float:
    """Median F0 (Hz) over clearly voiced 40 ms frames, by normalised autocorrelation."""
    x = y.astype(np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(x, 640)[::320]
    energy = (frames ** 2).mean(axis=1)
    frames = frames[energy > 0.25 * np.percentile(energy, 90)]
    frames = frames - frames.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(frames * np.hanning(640), 2048)
    ac = np.fft.irfft(np.abs(spec) ** 2)[:, :640]
    ac = ac / np.maximum(ac[:, :1], 1e-12)
    lo, hi = int(sr / 400), int(sr / 60)
    lags = lo + np.argmax(ac[:, lo:hi], axis=1)
    strength = ac[np.arange(len(ac)), lags]
    voiced = strength > 0.5
    assert voiced.sum() >= 5, "too few voiced frames"
    return float(np.median(sr / lags[voiced]))


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(a.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def voice_set():
    """120 identities x 3 utterances: mean log-mel per utterance, plus a few raw signals."""
    feats, ids, raw = [], [], {}
    for identity in range(120):
        for item in range(3):
            y = synthesize_utterance(SEED, identity, item)
            feats.append(log_mel(y).mean(axis=0))
            ids.append(identity)
            if item == 0 and identity < 24:
                raw[identity] = y
    return np.asarray(feats), np.asarray(ids), raw


# ----------------------------------------------------------------------------- attributes

def test_rng_streams_are_pure_and_separate():
    a = rng_for(1, 2, 3, corpus.STREAM_VOICE).random(4)
    assert np.array_equal(a, rng_for(1, 2, 3, corpus.STREAM_VOICE).random(4))
    assert not np.array_equal(a, rng_for(1, 2, 3, corpus.STREAM_FACE).random(4))
    assert not np.array_equal(a, rng_for(1, 2, 4, corpus.STREAM_VOICE).random(4))
    with pytest.raises(ValueError):
        rng_for(1, -1, 0, corpus.STREAM_VOICE)
    with pytest.raises(TypeError):
        rng_for(1, 2.5, 0, corpus.STREAM_VOICE)


def test_attributes_ranges_and_bimodal_gender():
    attrs = [identity_attributes(SEED, i) for i in range(300)]
    assert attrs[5] == identity_attributes(SEED, 5)
    g = np.array([a.gender for a in attrs])
    assert g.min() >= -2 and g.max() <= 2
    assert 0.35 < (g > 0).mean() < 0.65
    assert (np.abs(g) < 0.3).mean() < 0.1          # bimodal: few near zero
    assert (np.abs(np.abs(g) - 1) < 0.5).mean() > 0.8
    for a in attrs:
        assert 18 <= a.age <= 80
        assert -2.5 <= a.size <= 2.5 and -2.5 <= a.weight <= 2.5
        for name in ("accent", "breathiness", "hair_volume", "skin_tone", "hair_length",
                     "greyness", "baldness", "beard", "brow_thickness"):
            assert 0.0 <= getattr(a, name) <= 1.0, name
        assert -1 <= a.eye_spacing <= 1 and -1 <= a.nose_width <= 1
        assert all(0 <= c <= 255 for c in a.eye_colour + a.clothes_colour + a.hair_colour)
    # Shared structure: male-like identities are bigger and have the beards.
    size = np.array([a.size for a in attrs])
    assert size[g > 0].mean() > size[g < 0].mean() + 0.4
    assert max(a.beard for a in attrs if a.gender < 0) == 0.0
    assert attrs[0].vector().shape == (len(corpus.SHARED_FIELDS) + len(corpus.FACE_ONLY_FIELDS),)


# ----------------------------------------------------------------------------- voice

def test_utterance_deterministic_and_order_independent():
    forward = [synthesize_utterance(SEED, 3, i) for i in range(3)]
    backward = [synthesize_utterance(SEED, 3, i) for i in (2, 1, 0)][::-1]
    for a, b in zip(forward, backward):
        assert a.tobytes() == b.tobytes()
    assert forward[0].tobytes() != forward[1].tobytes()
    assert synthesize_utterance(SEED + 1, 3, 0).tobytes() != forward[0].tobytes()


def test_utterance_format_and_level():
    for identity in range(8):
        y = synthesize_utterance(SEED, identity, 1)
        assert y.dtype == np.int16 and y.ndim == 1
        assert 2.0 * SR <= len(y) <= 3.5 * SR
        peak = np.abs(y.astype(np.int32)).max()
        assert 8000 <= peak <= 20000
        # Leading and trailing silence: only the faint noise floor in the first/last 60 ms.
        assert np.abs(y[: int(0.06 * SR)]).max() < 200
        assert np.abs(y[-int(0.06 * SR):]).max() < 200
        # Pauses inside the speech, for a VAD to find: quiet 30 ms frames between loud ones.
        frames = y[: len(y) // 480 * 480].reshape(-1, 480).astype(np.float64)
        rms = np.sqrt((frames ** 2).mean(axis=1))
        loud = np.flatnonzero(rms > 0.1 * rms.max())
        inner = rms[loud[0]: loud[-1] + 1]
        assert (inner < 0.01 * rms.max()).sum() >= 1


def test_other_sample_rate():
    y = synthesize_utterance(SEED, 0, 0, sample_rate=8000)
    assert y.dtype == np.int16 and 2.0 * 8000 <= len(y) <= 3.5 * 8000
    with pytest.raises(ValueError):
        synthesize_utterance(SEED, 0, 0, sample_rate=4000)


def test_f0_falls_with_gender(voice_set):
    _, _, raw = voice_set
    genders, f0s, ratios = [], [], []
    for identity, y in raw.items():
        attrs = identity_attributes(SEED, identity)
        f0 = estimate_f0(y)
        genders.append(attrs.gender)
        f0s.append(f0)
        ratios.append(f0 / mean_f0_hz(attrs))
    genders, f0s = np.asarray(genders), np.asarray(f0s)
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    spearman = np.corrcoef(rank(genders), rank(f0s))[0, 1]
    assert spearman < -0.8, (spearman, list(zip(genders.round(2), f0s.round(1))))
    # The measured F0 follows the intended 150 Hz * exp(-0.33 * gender) (+ small terms).
    assert 0.85 < np.median(ratios) < 1.15
    assert np.median(f0s[genders > 0.5]) < 135 < np.median(f0s[genders < -0.5])


def test_gender_is_learnable_from_mean_log_mel(voice_set):
    feats, ids, _ = voice_set
    gender = np.array([identity_attributes(SEED, i).gender for i in ids])
    train, test = ids < 90, ids >= 90  # held-out identities
    mu, sd = feats[train].mean(0), feats[train].std(0) + 1e-9
    z = (feats - mu) / sd
    y_mean = gender[train].mean()
    w = np.linalg.solve(z[train].T @ z[train] + 3.0 * np.eye(z.shape[1]),
                        z[train].T @ (gender[train] - y_mean))
    pred = z[test] @ w + y_mean
    r2 = 1 - ((pred - gender[test]) ** 2).sum() / ((gender[test] - gender[test].mean()) ** 2).sum()
    assert r2 > 0.7, r2


# ----------------------------------------------------------------------------- faces

@pytest.mark.parametrize("quality", ["aligned", "in_the_wild"])
@pytest.mark.parametrize("size", [64, 128])
def test_face_format_and_determinism(size, quality):
    a = draw_face(SEED, 4, 0, size, quality)
    assert a.shape == (size, size, 3) and a.dtype == np.uint8
    assert a.tobytes() == draw_face(SEED, 4, 0, size, quality).tobytes()
    assert a.tobytes() != draw_face(SEED, 4, 1, size, quality).tobytes()
    assert a.tobytes() != draw_face(SEED, 5, 0, size, quality).tobytes()
    b = [draw_face(SEED, 4, j, size, quality) for j in (2, 1)]
    assert b[0].tobytes() == draw_face(SEED, 4, 2, size, quality).tobytes()
    assert a.std() > 20  # not blank


def test_face_bad_arguments():
    with pytest.raises(ValueError):
        draw_face(SEED, 0, 0, size=96)
    with pytest.raises(ValueError):
        draw_face(SEED, 0, 0, quality="studio")
    with pytest.raises(ValueError):
        pupil_positions(SEED, 0, 0, 128, "blurry")


def test_aligned_faces_have_white_corners_and_eyes_in_place():
    assert EYE_LEFT_128 == (49.0, 58.0) and EYE_RIGHT_128 == (79.0, 58.0)
    assert np.allclose(aligned_eye_positions(128), [EYE_LEFT_128, EYE_RIGHT_128])
    assert np.allclose(aligned_eye_positions(64), [[24.25, 28.75], [39.25, 28.75]])
    for size, tol in ((128, 1.6), (64, 1.1)):
        w = 5 if size == 128 else 3
        for identity in range(30):
            img = draw_face(SEED, identity, identity % 3, size)
            for corner in (img[:3, :3], img[:3, -3:], img[-3:, :3], img[-3:, -3:]):
                assert (corner == 255).all(), identity
            pupils = pupil_positions(SEED, identity, identity % 3, size)
            assert np.abs(pupils - aligned_eye_positions(size)).max() < 3.0 * size / 128
            grey = img.astype(np.int32).sum(axis=2)
            for x, y in pupils:
                xi, yi = int(round(x)), int(round(y))
                patch = grey[yi - w: yi + w + 1, xi - w: xi + w + 1]
                r, c = np.unravel_index(np.argmin(patch), patch.shape)
                assert np.hypot(xi - w + c - x, yi - w + r - y) < tol, (size, identity)


def test_in_the_wild_faces_are_unaligned_but_pupils_known():
    size = 128
    offsets, hits, backgrounds = [], 0, 0
    for identity in range(30):
        img = draw_face(SEED, identity, 0, size, "in_the_wild")
        pupils = pupil_positions(SEED, identity, 0, size, "in_the_wild")
        offsets.append(np.abs(pupils - aligned_eye_positions(size)).max())
        backgrounds += int(not (img[:3, :3] >= 250).all())
        grey = img.astype(np.int32).sum(axis=2)
        for x, y in pupils:
            xi, yi = int(round(x)), int(round(y))
            if not (5 <= xi < size - 5 and 5 <= yi < size - 5):
                continue
            patch = grey[yi - 5: yi + 6, xi - 5: xi + 6]
            r, c = np.unravel_index(np.argmin(patch), patch.shape)
            hits += np.hypot(xi - 5 + c - x, yi - 5 + r - y) < 2.0
    assert np.median(offsets) > 5.0
    assert backgrounds >= 27
    assert hits >= 0.75 * 60


def test_faces_follow_attributes():
    """Skin darkens with the accent factor; grey hair comes with age (checked on pixels)."""
    cheeks, tones = [], []
    for identity in range(40):
        attrs = identity_attributes(SEED, identity)
        img = draw_face(SEED, identity, 0, 128).astype(np.float64)
        cheeks.append(img[70:76, 58:70].mean())  # between nose and eyes: bare skin
        tones.append(attrs.skin_tone)
    assert np.corrcoef(cheeks, tones)[0, 1] < -0.8


# ----------------------------------------------------------------------------- spec, splits

def test_default_splits():
    s = default_splits(500)
    assert s == {"train": (0, 400), "val": (400, 450), "test": (450, 500),
                 "faceid": (500, 750)}
    s = default_splits(10, faceid_identities=7)
    assert s == {"train": (0, 8), "val": (8, 9), "test": (9, 10), "faceid": (10, 17)}
    s = default_splits(4)
    assert s["train"] == (0, 2) and s["faceid"][0] == 4
    for n in (101, 257, 1000):
        s = default_splits(n, val_fraction=0.15, test_fraction=0.05)
        ranges = [range(*s[k]) for k in ("train", "val", "test", "faceid")]
        assert sum(len(r) for r in ranges) == len(range(0, s["faceid"][1]))
        assert ranges[0].start == 0 and ranges[2].stop == n == ranges[3].start
    with pytest.raises(ValueError, match="too few"):
        default_splits(3)
    with pytest.raises(ValueError):
        default_splits(100, val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="faceid"):
        default_splits(100, faceid_identities=1)


def test_corpus_spec_and_generate_identity():
    spec = CorpusSpec(seed=SEED, num_identities=20, utterances_per_identity=2,
                      images_per_identity=2, image_size=64, num_faceid_identities=4,
                      faceid_images_per_identity=3)
    assert spec.split_of(0) == "train" and spec.split_of(19) == "test"
    assert list(spec.identities("faceid")) == [20, 21, 22, 23]
    with pytest.raises(ValueError):
        spec.split_of(24)
    with pytest.raises(ValueError):
        CorpusSpec(num_identities=2)
    with pytest.raises(ValueError):
        CorpusSpec(image_size=100)
    job = pickle.loads(pickle.dumps(functools.partial(generate_identity, spec)))
    sample = job(3)
    assert sample.split == "train" and len(sample.utterances) == 2 and len(sample.images) == 2
    assert sample.utterances[1].tobytes() == synthesize_utterance(SEED, 3, 1).tobytes()
    assert sample.images[0].tobytes() == draw_face(SEED, 3, 0, 64).tobytes()
    face_only = generate_identity(spec, 22)
    assert face_only.split == "faceid" and face_only.utterances == []
    assert len(face_only.images) == 3


def test_same_bytes_in_another_process():
    code = ("import hashlib; from keras_sf2f.data.corpus import synthesize_utterance, draw_face;"
            f"print(hashlib.sha256(synthesize_utterance({SEED}, 11, 2).tobytes()).hexdigest());"
            f"print(hashlib.sha256(draw_face({SEED}, 11, 2, 64, 'in_the_wild').tobytes())"
            ".hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "123"}).stdout.split()
    assert out == [_digest(synthesize_utterance(SEED, 11, 2)),
                   _digest(draw_face(SEED, 11, 2, 64, "in_the_wild"))]


# ----------------------------------------------------------------------------- sheets

def test_contact_sheet(tmp_path):
    images = [draw_face(SEED, i, 0, 64) for i in range(5)]
    path = tmp_path / "sub" / "sheet.png"
    sheet = write_contact_sheet(str(path), images, [f"id {i}" for i in range(5)], columns=3)
    read = np.asarray(Image.open(path))
    assert read.shape == sheet.shape and read.shape[1] > 3 * 64 and read.shape[0] > 2 * 64
    assert (read == sheet).all()
    with pytest.raises(ValueError):
        write_contact_sheet(str(path), images, ["a"], columns=3)


def _colour_bar_columns(img: np.ndarray) -> np.ndarray:
    """Columns of a spectrogram sheet holding the colour bar: the rightmost run of adjacent
    columns that show most of the colour table, each colour once, from the top (high) to the
    bottom (low)."""
    lut_codes = corpus.PERCEPTUAL_LUT.astype(np.int64) @ [65536, 256, 1]
    index = {code: i for i, code in enumerate(lut_codes)}
    codes = img.astype(np.int64) @ [65536, 256, 1]

    def is_bar(column):
        levels = [index[c] for c in column if c in index]
        return len(set(levels)) > 100 and np.all(np.diff(levels) <= 0)

    columns = np.flatnonzero([is_bar(column) for column in codes.T])
    assert len(columns), "no colour bar"
    start = len(columns) - 1
    while start > 0 and columns[start - 1] == columns[start] - 1:
        start -= 1
    return columns[start:]


def test_spectrogram_png_orientation_and_colours(tmp_path):
    lut = corpus.PERCEPTUAL_LUT
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    lightness = lut.astype(np.float64) @ [0.299, 0.587, 0.114]
    assert np.all(np.diff(lightness) >= -0.5)  # brightness never decreases
    low = np.zeros((50, 40))
    low[:, 0] = 1.0  # energy in the lowest band only
    path = tmp_path / "spec.png"
    img = write_spectrogram_png(str(path), [low, np.zeros((30, 40))], ["low band", "silence"],
                                bin_height=2, vmin=0.0, vmax=1.0)
    assert np.asarray(Image.open(path)).shape == img.shape
    # The colour bar: COLOUR_BAR_WIDTH adjacent columns right of the panels, the highest
    # value at its top, the lowest at its bottom.
    bar = _colour_bar_columns(img)
    assert len(bar) == COLOUR_BAR_WIDTH
    column = img[:, bar[0]]
    rows = np.flatnonzero(np.all(column == lut[-1], axis=1) | np.all(column == lut[0], axis=1))
    assert np.all(column[rows.min()] == lut[-1]) and np.all(column[rows.max()] == lut[0])
    panels = img[:, :bar[0]]
    bright = np.all(panels == lut[-1], axis=2)
    dark = np.all(panels == lut[0], axis=2)
    assert bar[0] > np.flatnonzero(bright.any(axis=0) | dark.any(axis=0)).max()
    # The first panel: its lowest band (bin_height bright rows) is at its bottom, below its
    # other (dark) rows; the panel starts right of the band labels.
    rows_bright = np.flatnonzero(bright.any(axis=1))
    assert len(rows_bright) == 2
    assert rows_bright.min() > np.flatnonzero(dark.any(axis=1)).min()
    left = np.flatnonzero(bright[rows_bright[0]]).min()
    assert left > 20
    # Labels right of the bar (its values and unit): the right margin is not blank.
    right = img[:, bar[-1] + 1:]
    assert right.shape[1] > 30 and (right < 200).any()
    with pytest.raises(ValueError, match="band_hz has 3 frequencies for 40 bins"):
        write_spectrogram_png(str(path), [low], ["x"], band_hz=[1.0, 2.0, 3.0])
    labelled = write_spectrogram_png(str(path), [low], ["x"], vmin=0.0, vmax=1.0,
                                     band_hz=mel_band_centres_hz(16000))
    # The centre frequencies take a second column of tick labels.
    assert np.flatnonzero(np.all(labelled == lut[-1], axis=2).any(axis=0)).min() > left + 20


def test_data_preparation_writes_labelled_spectrograms(tmp_path):
    from keras_sf2f.data import prepare

    spec = CorpusSpec(seed=SEED, num_identities=12, utterances_per_identity=1,
                      images_per_identity=1)
    info = prepare.prepare_procedural(str(tmp_path), spec, num_workers=1)
    path = os.path.join(str(tmp_path), "spectrograms.png")
    assert path in info["previews"]
    img = np.asarray(Image.open(path).convert("RGB"))
    # Six panels of 40 bands x 3 px with titles and axes, and the colour bar at the right.
    assert img.shape[0] > 6 * 120 and 300 < img.shape[1] < 1500
    bar = _colour_bar_columns(img)
    assert len(bar) == COLOUR_BAR_WIDTH and bar[0] > img.shape[1] * 0.6
    assert (img[:, bar[-1] + 1:] < 200).any()  # its value labels and unit


def test_extra_training_identities_keep_the_evaluation_identities(tmp_path):
    """More training voices, numbered after the faceid range: the prepared train split holds
    both ranges in order, and val / test / faceid are the corpus's without them."""
    from keras_sf2f.data import prepare
    from keras_sf2f.data.procedural import identity_name
    from keras_sf2f.data.table import load_split
    from keras_sf2f.evaluation import oracle

    plain = CorpusSpec(seed=SEED, num_identities=10, num_faceid_identities=2)
    spec = CorpusSpec(seed=SEED, num_identities=10, num_faceid_identities=2,
                      utterances_per_identity=1, images_per_identity=1, image_size=64,
                      faceid_images_per_identity=2, extra_train_identities=3)
    assert spec.splits() == {**plain.splits(), "train_extra": (12, 15)}
    assert spec.identities("train") == list(range(8)) + [12, 13, 14]
    for split in ("val", "test", "faceid"):
        assert spec.identities(split) == plain.identities(split)
    assert spec.split_of(13) == "train" and spec.split_of(11) == "faceid"
    assert spec.all_identities() == range(15)
    with pytest.raises(ValueError, match=r"0 \.\. 14"):
        spec.split_of(15)
    with pytest.raises(ValueError, match="extra_train_identities"):
        CorpusSpec(extra_train_identities=-1)

    data_dir = str(tmp_path / "data")
    prepare.prepare_procedural(data_dir, spec, num_workers=1, preview=False)
    train = load_split(data_dir, "train")
    assert list(train.names) == [identity_name(i) for i in spec.identities("train")]
    assert list(load_split(data_dir, "test").names) == [identity_name(9)]
    # The evaluation's reading of the corpus follows the recorded ranges.
    info = oracle.procedural_identities(data_dir, "train", train.names)
    assert info["identities"] == spec.identities("train")
    assert oracle.procedural_identities(data_dir, "test", [identity_name(9)])["identities"] \
        == [9]
    with pytest.raises(ValueError, match=r"\[0, 8\), \[12, 15\)"):
        oracle.procedural_identities(data_dir, "train", list(train.names)[:8])


def test_mel_band_centres_rise_to_below_nyquist():
    centres = mel_band_centres_hz(16000, 40)
    assert centres.shape == (40,) and np.all(np.diff(centres) > 0)
    assert 0 < centres[0] < 100 and 7000 < centres[-1] < 8000
