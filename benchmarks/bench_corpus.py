"""Benchmark of the procedural voice-face corpus generator.

Times ``generate_identity`` for N identities x U utterances x I faces at 64 and 128 px, in one
process and in a ``multiprocessing.Pool``, and prints a table with the extrapolated time for
500 identities (the target: about a minute on 2 cores). Also prints per-item CPU
costs. With ``--learnability M`` it also fits, on M identities (3/4 train, 1/4 held out), a
ridge regression from each utterance's mean log-mel to every attribute and prints the
held-out R^2 (identity-averaged predictions): how much of each attribute a voice reveals.

    .venv/bin/python benchmarks/bench_corpus.py --identities 100
    .venv/bin/python benchmarks/bench_corpus.py --identities 0 --learnability 400
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import time

import numpy as np

from keras_sf2f.data.corpus import (FACE_ONLY_FIELDS, SHARED_FIELDS, CorpusSpec,
                                    draw_face, generate_identity, identity_attributes,
                                    synthesize_utterance)


def _generate(spec: CorpusSpec, identities, processes: int) -> float:
    job = functools.partial(generate_identity, spec)
    start = time.perf_counter()
    if processes == 1:
        for identity in identities:
            job(identity)
    else:
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            for _ in pool.imap_unordered(job, identities, chunksize=4):
                pass
    return time.perf_counter() - start


def _per_item_cpu(n: int = 30) -> list[tuple[str, float]]:
    rows = []
    synthesize_utterance(0, 0, 0)
    start, samples = time.process_time(), 0
    for i in range(n):
        samples += len(synthesize_utterance(0, i, 1))
    dt = time.process_time() - start
    rows.append(("utterance (per 2.75 s of audio)", dt / (samples / 16000.0) * 2.75 * 1000))
    for quality in ("aligned", "in_the_wild"):
        for size in (64, 128):
            draw_face(0, 0, 0, size, quality)
            start = time.process_time()
            for i in range(n):
                draw_face(0, i, 0, size, quality)
            rows.append((f"face {size} px {quality}", (time.process_time() - start) / n * 1000))
    return rows


def _mel_filterbank_t(sr: int = 16000) -> np.ndarray:
    """python_speech_features' 40 triangular filters on 512-point FFT bins, as [257, 40]."""
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    imel = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    bins = np.floor(513 * imel(np.linspace(mel(0), mel(sr / 2), 42)) / sr)
    k = np.arange(257)[None, :]
    lo, mid, hi = bins[:-2, None], bins[1:-1, None], bins[2:, None]
    fb = (np.where((k >= lo) & (k < mid), (k - lo) / np.maximum(mid - lo, 1), 0.0)
          + np.where((k >= mid) & (k < hi), (hi - k) / np.maximum(hi - mid, 1), 0.0))
    return np.ascontiguousarray(fb.T)


_FB_T = _mel_filterbank_t()


def _log_mel(y: np.ndarray) -> np.ndarray:
    """python_speech_features-style logfbank at 16 kHz (numpy): [frames, 40]."""
    x = y.astype(np.float64)
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::160]
    power = np.abs(np.fft.rfft(frames, 512)) ** 2 / 512.0
    # einsum, not @: a BLAS matmul this small wastes CPU on threads (here 5x the time).
    return np.log(np.maximum(np.einsum("fk,km->fm", power, _FB_T),
                             np.finfo(np.float64).eps))


def _features(seed, identity, utterances):
    return [_log_mel(synthesize_utterance(seed, identity, u)).mean(axis=0)
            for u in range(utterances)]


def learnability(num_identities: int, utterances: int, seed: int, processes: int,
                 alpha: float = 1.0) -> dict[str, float]:
    job = functools.partial(_features, seed, utterances=utterances)
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        feats = pool.map(job, range(num_identities), chunksize=8)
    x = np.asarray([f for per_id in feats for f in per_id])
    ids = np.repeat(np.arange(num_identities), utterances)
    names = SHARED_FIELDS + ("skin_tone",) + FACE_ONLY_FIELDS
    attrs = np.asarray([identity_attributes(seed, i).vector(names) for i in range(num_identities)])
    n_train = int(0.75 * num_identities)
    train = ids < n_train
    mu, sd = x[train].mean(0), x[train].std(0) + 1e-9
    z = (x - mu) / sd
    out = {}
    for j, name in enumerate(names):
        y = attrs[ids, j]
        y_mean = y[train].mean()
        w = np.linalg.solve(z[train].T @ z[train] + alpha * np.eye(z.shape[1]),
                            z[train].T @ (y[train] - y_mean))
        pred = z @ w + y_mean
        per_id = np.array([pred[ids == i].mean() for i in range(n_train, num_identities)])
        truth = attrs[n_train:, j]
        out[name] = 1.0 - ((per_id - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum()
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identities", type=int, default=60)
    parser.add_argument("--utterances", type=int, default=5)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quality", default="aligned", choices=["aligned", "in_the_wild"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learnability", type=int, default=0, metavar="M",
                        help="also measure attribute R^2 on M identities (3 utterances each)")
    args = parser.parse_args(argv)

    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    print("\nper-item CPU time (single process)")
    for name, ms in _per_item_cpu():
        print(f"  {name:<34s} {ms:7.2f} ms")

    if args.identities > 0:
        n = args.identities
        print(f"\n{n} identities x {args.utterances} utterances x {args.images} faces "
              f"({args.quality})")
        print(f"  {'size':>4s} {'procs':>5s} {'wall s':>8s} {'ms/identity':>12s} "
              f"{'500 ids (s)':>12s}")
        for size in args.sizes:
            spec = CorpusSpec(seed=args.seed, num_identities=max(n, 4),
                              utterances_per_identity=args.utterances,
                              images_per_identity=args.images, image_size=size,
                              face_quality=args.quality)
            for procs in args.processes:
                wall = _generate(spec, range(n), procs)
                print(f"  {size:4d} {procs:5d} {wall:8.2f} {wall / n * 1000:12.1f} "
                      f"{wall / n * 500:12.1f}")

    if args.learnability:
        m = args.learnability
        start = time.perf_counter()
        r2 = learnability(m, 3, args.seed, max(args.processes))
        print(f"\nheld-out R^2 of a ridge regression from mean log-mel "
              f"({m} identities x 3 utterances, {time.perf_counter() - start:.0f} s)")
        for name, value in r2.items():
            kind = "face-only" if name in FACE_ONLY_FIELDS else "shared"
            print(f"  {name:<12s} {value:6.2f}   ({kind})")


if __name__ == "__main__":
    main()
