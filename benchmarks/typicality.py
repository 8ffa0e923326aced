"""How well ``voice_typicality`` tells the corpus's voices from synthetic speech and noise.

    python benchmarks/typicality.py --export=/models/sf2f_64/1 [--data_dir=DATA] \
        [--split=test] [--out=benchmarks/typicality_results]
    python benchmarks/typicality.py --checkpoint_dir=runs/sf2f_64/stage2 [--data_dir=DATA] ...

``--export`` is an exported version directory (or its model directory: the newest version) that
has the ``voice_typicality`` output; ``--checkpoint_dir`` exports the checkpoint first, into
``--work_dir``, calibrated on ``--data_dir`` (default: the run's flags.cfg). The corpus comes
from ``--data_dir``, by default the directory the export was calibrated on (its metadata).

Three kinds of voice go through the exported graph as WAV files (``serving_default``, exactly
what a client sends), and again as samples (``predict_waveform``, for the embedding, from which
the distance ``d`` to the reference bank is recomputed; the two typicalities must agree, so a
trailing run of samples equal to the first, which ``predict_waveform`` treats as batch padding,
is cut off every clip first):

* ``corpus``: each identity of ``--split`` (default ``test``: never trained on, never used by
  the calibration), all its speech regenerated as the data preparation computed it
  (``keras_sf2f.evaluation.speech_audio``), cut to the export's longest audio;
  ``corpus_short``: the first ``--short_seconds`` (default 4 s) of the same speech;
* ``espeak``: espeak-ng (Debian ``espeak-ng``) reading two sentences, for every voice of
  ``--espeak_voices`` at every pitch of ``--espeak_pitches`` (22.05 kHz 16-bit WAVs, a rate the
  graph resamples itself);
* ``noise``: ``--noise_per_kind`` clips of 5 s of white, pink and brown noise, babble (six
  espeak voices over each other; without espeak-ng, six of
  ``savedmodel.speech_like``'s synthetic vowels) and mains hum, at -30..-15 dBFS RMS.

Reported (``typicality.json``, ``typicality.md`` in ``--out``): per group the typicality's
quantiles and the share warned at the export's ``typicality_warning_below``; the AUROC of
"corpus" against each other group and against all of them, from the typicality (ties count
half) and from the distance ``d`` (finer: the typicality of every voice beyond the farthest
calibration voice is 0). A clip the graph refuses (e.g. noise the energy gate removes) is
listed with its error and left out of the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

DEFAULT_VOICES = ("en+m1", "en+m3", "en+m7", "en+f2", "en+f4", "en+klatt", "en+whisperf",
                  "en-us+m2", "en-gb-x-rp+f3", "de+m4", "fr+f5", "es+m2", "it+f2", "hi+f3")
DEFAULT_PITCHES = (30, 50, 70)
SENTENCES = ("The quick brown fox jumps over the lazy dog near the old river bank.",
             "Please call Stella and ask her to bring these things with her from the store.")
NOISE_KINDS = ("white", "pink", "brown", "babble", "hum")
NOISE_SECONDS = 5.0
RATE = 16000


# ---------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------

def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """16-bit PCM mono WAV of int16-scale samples."""
    import soundfile as sf  # noqa: PLC0415
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(np.rint(samples), -32768, 32767).astype(np.int16), rate,
             subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """int16-scale float32 mono samples and the rate."""
    import soundfile as sf  # noqa: PLC0415
    samples, rate = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    return (samples.mean(axis=1) * 32768.0).astype(np.float32), int(rate)


def espeak_wav(voice: str, pitch: int, text: str, speed: int = 160) -> bytes:
    """What ``espeak-ng -v VOICE -p PITCH -s SPEED -w FILE TEXT`` writes (22.05 kHz)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.wav")
        result = subprocess.run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed),
                                 "-w", path, text], capture_output=True, text=True, timeout=120)
        if result.returncode != 0 or not os.path.isfile(path):
            raise RuntimeError(f"espeak-ng -v {voice} failed: {result.stderr.strip()[:300]}")
        with open(path, "rb") as f:
            return f.read()


def _scaled(x: np.ndarray, dbfs: float) -> np.ndarray:
    """``x`` scaled to an RMS of ``dbfs`` relative to int16 full scale."""
    rms = float(np.sqrt(np.mean(x ** 2))) or 1.0
    return x / rms * 32768.0 * 10 ** (dbfs / 20.0)


def _coloured(rng, n: int, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1 / f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    return np.fft.irfft(spectrum / f ** (exponent / 2.0), n)


def noise_clip(kind: str, seed: int, espeak: bool) -> tuple[np.ndarray, int, str]:
    """``(int16-scale samples, rate, note)`` of ``NOISE_SECONDS`` of one kind of noise."""
    rng = np.random.default_rng([seed, NOISE_KINDS.index(kind)])
    n = int(NOISE_SECONDS * RATE)
    level = float(rng.uniform(-30.0, -15.0))
    note = f"{level:.1f} dBFS RMS"
    if kind in ("white", "pink", "brown"):
        x = _coloured(rng, n, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])
    elif kind == "hum":
        t = np.arange(n) / RATE
        base = float(rng.choice([50.0, 60.0]))
        x = sum(np.sin(2 * np.pi * k * base * t + rng.uniform(0, 2 * np.pi)) / k
                for k in range(1, 8)) + 0.05 * rng.standard_normal(n)
        note += f", {base:g} Hz and harmonics"
    elif kind == "babble":
        x = np.zeros(n)
        talkers = rng.choice(len(DEFAULT_VOICES), size=6, replace=False)
        for k, voice_index in enumerate(talkers):
            if espeak:
                samples, rate = decode_wav(espeak_wav(DEFAULT_VOICES[voice_index],
                                                      int(rng.integers(20, 80)),
                                                      " ".join(SENTENCES)))
                samples = _resampled(samples, rate)
            else:
                from keras_sf2f.serving.savedmodel import speech_like  # noqa: PLC0415
                samples = speech_like(NOISE_SECONDS + 1, RATE, seed=seed * 10 + k,
                                      f0=float(rng.uniform(90, 250)))
            start = int(rng.integers(0, max(1, len(samples) - n)))
            piece = np.resize(samples[start:], n) if len(samples) - start < n else \
                samples[start:start + n]
            x = x + _scaled(piece.astype(np.float64), -20.0)
        note += ", six " + ("espeak-ng voices" if espeak else "synthetic vowels")
    else:
        raise ValueError(kind)
    return _scaled(x, level).astype(np.float32), RATE, note


def _resampled(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return samples
    import soxr  # noqa: PLC0415
    return soxr.resample(samples.astype(np.float64), rate, RATE).astype(np.float32)


def corpus_clips(data_dir: str, split: str, max_seconds: float, short_seconds: float,
                 max_identities: int):
    """``[(group, name, samples, note)]`` of the split's identities (see the module doc), and
    the identities without audio with the reason."""
    from keras_sf2f.data.table import load_split  # noqa: PLC0415
    from keras_sf2f.evaluation.speech_audio import AudioUnavailable, SpeechSource  # noqa

    table = load_split(data_dir, split, require_faces=False)
    source = SpeechSource(data_dir, table)
    clips, missing = [], []
    first = np.asarray(table.id_utt_first)
    count = np.asarray(table.id_utt_count)
    identities = range(table.num_identities)
    if max_identities:
        identities = identities[:max_identities]
    for i in identities:
        name = table.names[i]
        try:
            speech = np.concatenate([source.utterance_samples(int(u)).astype(np.float32)
                                     for u in range(first[i], first[i] + count[i])])
        except (AudioUnavailable, ValueError) as e:
            missing.append({"name": name, "reason": str(e) or "no utterances"})
            continue
        full = speech[:int(max_seconds * RATE)]
        clips.append(("corpus", name, full, f"{len(full) / RATE:.1f} s"))
        if short_seconds:
            short = speech[:int(short_seconds * RATE)]
            clips.append(("corpus_short", name, short, f"{len(short) / RATE:.1f} s"))
    return clips, missing


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

def auroc(positive, negative) -> float | None:
    """P(score of a positive > score of a negative), ties counting half (Mann-Whitney U)."""
    pos = np.asarray(positive, np.float64)
    neg = np.asarray(negative, np.float64)
    if pos.size == 0 or neg.size == 0:
        return None
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (pos.size * neg.size))


class Scorer:
    """The exported graph, called as a client would (WAV) and on samples (for the embedding)."""

    def __init__(self, version_dir: str):
        import tensorflow as tf  # noqa: PLC0415
        self.tf = tf
        with open(os.path.join(version_dir, "assets.extra", "sf2f_export.json")) as f:
            self.metadata = json.load(f)
        section = self.metadata.get("voice_typicality") or {}
        if not section.get("available"):
            raise SystemExit(f"error: {version_dir} has no voice_typicality output: "
                             f"{section.get('reason', 'exported before it existed')}")
        self.loaded = tf.saved_model.load(version_dir)
        bank, calibration = self.loaded.typicality_variables
        self.bank = bank.numpy()
        self.calibration = calibration.numpy()
        self.threshold = float(self.metadata["typicality_warning_below"])
        self.max_seconds = float(self.metadata["audio_pipeline"]["max_audio_seconds"])

    def score(self, data: bytes) -> dict:
        tf = self.tf
        try:
            answer = self.loaded.signatures["serving_default"](audio=tf.constant([data]))
            samples, rate = decode_wav(data)
            again = self.loaded.signatures["predict_waveform"](
                waveform=tf.constant(samples[None]), sample_rate=tf.constant(rate))
        except tf.errors.InvalidArgumentError as e:
            message = e.message.split("assertion failed: [", 1)[-1].split("]\n", 1)[0]
            return {"error": message}
        typicality = float(answer["voice_typicality"][0])
        embedding = again["embedding"].numpy()[0]
        distance = float(1.0 - np.max(self.bank @ embedding))
        return {"typicality": typicality, "distance": distance,
                "typicality_from_samples": float(again["voice_typicality"][0])}


def summarise(items: list, threshold: float) -> dict:
    groups = {}
    for item in items:
        groups.setdefault(item["group"], []).append(item)
    summary = {}
    for group, members in groups.items():
        ok = [m for m in members if "error" not in m]
        t = np.asarray([m["typicality"] for m in ok])
        d = np.asarray([m["distance"] for m in ok])
        summary[group] = {
            "clips": len(members), "refused": len(members) - len(ok),
            "warned_share": float((t < threshold).mean()) if ok else None,
            "typicality_quantiles": {f"{q:g}": float(np.quantile(t, q))
                                     for q in (0.0, 0.1, 0.5, 0.9, 1.0)} if ok else None,
            "typicality_mean": float(t.mean()) if ok else None,
            "distance_median": float(np.median(d)) if ok else None,
        }
    separation = {}
    others = [g for g in groups if not g.startswith("corpus")]

    def values(group, key):
        return [m[key] for m in groups.get(group, []) if "error" not in m]

    for corpus in (g for g in ("corpus", "corpus_short") if g in groups):
        rows = {}
        for other in others + ["all_others"]:
            pool = others if other == "all_others" else [other]
            t_other = [v for g in pool for v in values(g, "typicality")]
            d_other = [v for g in pool for v in values(g, "distance")]
            rows[other] = {
                "auroc_typicality": auroc(values(corpus, "typicality"), t_other),
                # Smaller distance = more typical: negate so that corpus scores higher.
                "auroc_distance": auroc([-v for v in values(corpus, "distance")],
                                        [-v for v in d_other]),
            }
        separation[corpus] = rows
    return {"groups": summary, "separation": separation}


def markdown(result: dict) -> str:
    threshold = result["typicality_warning_below"]
    lines = [
        "# Voice typicality: corpus voices against espeak-ng voices and noise", "",
        f"Model `{result['model']}`, calibrated on `{result['calibration_data_dir']}` "
        f"({result['calibration_identities']} calibration identities, bank of "
        f"{result['bank_identities']}); corpus split `{result['split']}` of "
        f"`{result['data_dir']}`. Warning threshold: typicality < {threshold:g}. "
        f"{result['cpu']}, {result['seconds']:.0f} s.", "",
        "| group | clips | refused | warned | typicality min / p10 / median / p90 / max "
        "| median distance |",
        "|---|---:|---:|---:|---|---:|"]
    for group, s in result["groups"].items():
        if s["typicality_quantiles"] is None:
            lines.append(f"| {group} | {s['clips']} | {s['refused']} | - | - | - |")
            continue
        q = s["typicality_quantiles"]
        lines.append(f"| {group} | {s['clips']} | {s['refused']} | "
                     f"{100 * s['warned_share']:.0f} % | "
                     f"{q['0']:.3f} / {q['0.1']:.3f} / {q['0.5']:.3f} / {q['0.9']:.3f} / "
                     f"{q['1']:.3f} | {s['distance_median']:.4f} |")
    lines += ["", "AUROC of the corpus voices against the others (1.0: every corpus voice is "
              "more typical than every other clip; 0.5: no separation):", "",
              "| corpus group | against | AUROC (typicality, ties half) | AUROC (distance) |",
              "|---|---|---:|---:|"]
    for corpus, rows in result["separation"].items():
        for other, row in rows.items():
            a, b = row["auroc_typicality"], row["auroc_distance"]
            lines.append(f"| {corpus} | {other} | {'-' if a is None else f'{a:.3f}'} | "
                         f"{'-' if b is None else f'{b:.3f}'} |")
    if result["typicality_mismatches"]:
        lines += ["", f"**{result['typicality_mismatches']} clips got a different typicality "
                  f"from the WAV and from its samples.**"]
    refused = [i for i in result["items"] if "error" in i]
    if refused:
        lines += ["", "Refused by the graph (left out of the figures):", ""]
        lines += [f"- {i['group']} `{i['name']}`: {i['error']}" for i in refused[:20]]
    if result["corpus_without_audio"]:
        lines += ["", f"{len(result['corpus_without_audio'])} corpus identities have no audio "
                  f"(e.g. {result['corpus_without_audio'][0]['reason']})."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

def _version_dir(path: str) -> str:
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted((int(v) for v in os.listdir(path) if v.isdigit()
                       and os.path.isfile(os.path.join(path, v, "saved_model.pb"))),
                      reverse=True) if os.path.isdir(path) else []
    if not versions:
        raise SystemExit(f"error: {path} is neither an exported version nor a model directory "
                         f"holding one")
    return os.path.join(path, str(versions[0]))


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--export", help="exported version directory (or its model directory)")
    model.add_argument("--checkpoint_dir", help="export this checkpoint first (into --work_dir)")
    parser.add_argument("--data_dir", default=None,
                        help="prepared data: the corpus (and, with --checkpoint_dir, the "
                             "calibration); default: the export's calibration data")
    parser.add_argument("--split", default="test", help="corpus split to take voices from")
    parser.add_argument("--max_identities", type=int, default=0, help="0: all of the split")
    parser.add_argument("--short_seconds", type=float, default=4.0,
                        help="length of the corpus_short clips (0: no such group)")
    parser.add_argument("--espeak_voices", default=",".join(DEFAULT_VOICES))
    parser.add_argument("--espeak_pitches", default=",".join(map(str, DEFAULT_PITCHES)))
    parser.add_argument("--noespeak", action="store_true",
                        help="skip the espeak-ng group (babble then mixes synthetic vowels)")
    parser.add_argument("--noise_per_kind", type=int, default=5)
    parser.add_argument("--work_dir", default=None,
                        help="where --checkpoint_dir is exported (default: a temporary "
                             "directory, removed afterwards)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(
        __file__)), "typicality_results"), help="directory for typicality.json/.md")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    espeak = not args.noespeak
    if espeak and shutil.which("espeak-ng") is None:
        raise SystemExit("error: espeak-ng is not installed (apt-get install espeak-ng), or "
                         "pass --noespeak")
    temporary = None
    if args.checkpoint_dir:
        from keras_sf2f.serving import savedmodel  # noqa: PLC0415
        work = args.work_dir or (temporary := tempfile.mkdtemp(prefix="typicality-"))
        exported = savedmodel.export_checkpoint(
            args.checkpoint_dir, os.path.join(work, "models", "typicality"),
            data_dir=args.data_dir, verify=False)
        version_dir = exported.path
    else:
        version_dir = _version_dir(args.export)
    try:
        scorer = Scorer(version_dir)
        section = scorer.metadata["voice_typicality"]
        data_dir = args.data_dir or section.get("data_dir")
        if not data_dir:
            raise SystemExit("error: pass --data_dir (the export does not record its data)")

        clips, missing = corpus_clips(data_dir, args.split, scorer.max_seconds,
                                      args.short_seconds, args.max_identities)
        if not clips:
            raise SystemExit(f"error: no corpus audio in split {args.split!r} of {data_dir}: "
                             f"{missing[0]['reason'] if missing else 'no identities'}")
        items = []

        def add(group, name, data, note):
            # predict_waveform drops a trailing run of samples equal to the first one (its
            # batch-padding rule) and serving_default does not; espeak-ng ends its files with
            # digital silence, which changes where the energy gate cuts. Dropping that run
            # here gives both paths the same audio (it carries nothing of the voice).
            samples, rate = decode_wav(data)
            differs = np.flatnonzero(samples != samples[0]) if len(samples) else []
            if len(differs) and differs[-1] + 1 < len(samples):
                data = wav_bytes(samples[:differs[-1] + 1], rate)
            item = {"group": group, "name": name, "note": note, **scorer.score(data)}
            items.append(item)
            shown = item.get("typicality", item.get("error"))
            print(f"{group:13s} {name:30s} {shown}", flush=True)

        for group, name, samples, note in clips:
            add(group, name, wav_bytes(samples, RATE), note)
        if espeak:
            for voice in (v for v in args.espeak_voices.split(",") if v):
                for pitch in (int(p) for p in args.espeak_pitches.split(",") if p):
                    try:
                        data = espeak_wav(voice, pitch, " ".join(SENTENCES))
                    except RuntimeError as e:
                        items.append({"group": "espeak", "name": f"{voice} p{pitch}",
                                      "error": str(e)})
                        continue
                    add("espeak", f"{voice} p{pitch}", data, "22.05 kHz")
        for kind in NOISE_KINDS:
            for seed in range(args.noise_per_kind):
                samples, rate, note = noise_clip(kind, seed, espeak)
                add("noise", f"{kind} {seed}", wav_bytes(samples, rate), note)

        mismatches = sum(1 for i in items if "error" not in i
                         and abs(i["typicality"] - i["typicality_from_samples"]) > 1e-6)
        result = {
            "model": os.path.abspath(args.checkpoint_dir or version_dir),
            "data_dir": os.path.abspath(data_dir),
            "split": args.split,
            "calibration_data_dir": section.get("data_dir"),
            "calibration_identities": int(scorer.calibration.size),
            "bank_identities": int(scorer.bank.shape[0]),
            "typicality_warning_below": scorer.threshold,
            **summarise(items, scorer.threshold),
            "typicality_mismatches": mismatches,
            "corpus_without_audio": missing,
            "items": items,
            "cpu": _cpu(),
            "seconds": time.perf_counter() - started,
            "command": " ".join([os.path.relpath(__file__)] + list(
                sys.argv[1:] if argv is None else argv)),
        }
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "typicality.json"), "w") as f:
        json.dump(result, f, indent=1)
    text = markdown(result)
    with open(os.path.join(args.out, "typicality.md"), "w") as f:
        f.write(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
