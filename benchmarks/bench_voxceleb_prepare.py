"""How fast the VoxCeleb preparation runs, per stage and end to end, and what the whole of
VoxCeleb1+2 would take.

    python benchmarks/bench_voxceleb_prepare.py [--quick] [--rounds=2] [--workers=1,2]
        [--out_dir=benchmarks/voxceleb_prepare_results]

Builds two synthetic trees in a temporary directory, in the layout ``prepare_voxceleb``
reads (``raw_wav/<subset>/dev/<id>/<video>/<nnnnn>.wav|m4a``, the meta CSV, HQ-VoxCeleb's
``<subset>/masked_faces/<Name>/*.jpg``): one of 16-bit WAV (VoxCeleb1's format) and one of
AAC in M4A made from the same kind of audio by ffmpeg (VoxCeleb2's). The speech is the
procedural corpus's voices, several phrases per utterance with pauses and a noise floor,
4-8 s long (VoxCeleb's segments are at least 4 s; their mean is about 8 s).

Then, in interleaved rounds (every round runs every case once, so all cases see the same
machine load):

* stages, one process, one TensorFlow thread (what one worker does per item): decode
  (soundfile; ffmpeg through audioread for M4A), VAD (webrtcvad), features (log mel,
  normalised, float16), record writing (``DatasetWriter``), and face PNGs per image;
* end to end: ``prepare_voxceleb`` with each ``--workers`` count, wall and CPU time
  (this process and its children, ffmpeg included), in utterances per second; with more than
  one worker also the pool's start-up (spawned workers import TensorFlow), reported apart
  because it does not grow with the data.

Last, the WAV tree is prepared in 2 shards and merged (checked equal to the unsharded run)
to time the merge. The extrapolation to VoxCeleb1+2 on 16 cores states its assumptions in
the output. Writes ``results.json`` and ``results.md`` in ``--out_dir``.

The machine this was written on has 2 cores shared with training runs: rates measured there
are lower bounds, the 2-worker case most of all.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

# Published utterance counts: VoxCeleb1 (WAV) and VoxCeleb2 dev + test (M4A).
VOX1_UTTERANCES = 153_516
VOX2_UTTERANCES = 1_128_246
TARGET_UTTERANCES = 1_250_000
TARGET_CORES = 16
# VoxCeleb's mean utterance length in seconds (VoxCeleb1 352 h / 153,516 = 8.3 s; VoxCeleb2
# 2,442 h / 1,128,246 = 7.8 s).
VOXCELEB_MEAN_SECONDS = 8.0
SAMPLE_RATE = 16000


# ------------------------------------------------------------------------------------------
# The synthetic tree
# ------------------------------------------------------------------------------------------

def _utterance(rng, phrases: list, seconds: float) -> np.ndarray:
    """Phrases of one voice with 0.15-0.6 s pauses, cut to ``seconds``, over a noise floor
    (~-60 dB of full scale, as a quiet recording has), int16."""
    parts, total, n = [], 0, int(seconds * SAMPLE_RATE)
    while total < n:
        phrase = phrases[rng.integers(len(phrases))].astype(np.float64)
        pause = np.zeros(int(rng.uniform(0.15, 0.6) * SAMPLE_RATE))
        parts += [phrase, pause]
        total += len(phrase) + len(pause)
    x = np.concatenate(parts)[:n] + rng.normal(scale=30.0, size=n)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def build_tree(root: str, fmt: str, identities: int, utterances: int, faces: int,
               seed: int = 0, lengths: tuple = (4.0, 8.0)) -> dict:
    """A VoxCeleb-layout tree of ``identities`` x ``utterances`` files of ``fmt`` ('wav' or
    'm4a'), each uniformly ``lengths`` seconds long, and ``faces`` face images each; returns its
    size."""
    import soundfile as sf  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    from keras_sf2f.data import corpus  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    subset = "vox1" if fmt == "wav" else "vox2"
    people = [(f"id{1 if fmt == 'wav' else 0}{k:04d}", f"Person_{fmt}_{k:03d}")
              for k in range(identities)]
    os.makedirs(os.path.join(root, subset))
    with open(os.path.join(root, subset, "vox1_meta.csv" if fmt == "wav"
                           else "full_vox2_meta.csv"), "w") as f:
        if fmt == "wav":
            f.write("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n")
            f.writelines(f"{i}\t{n}\t{'mf'[k % 2]}\tUSA\tdev\n" for k, (i, n) in enumerate(people))
        else:
            f.write("VoxCeleb2ID ,Name ,Gender ,Set \n")
            f.writelines(f"{i} ,{n} ,{'mf'[k % 2]} ,dev \n" for k, (i, n) in enumerate(people))
    encode, seconds = [], []
    for k, (spk, name) in enumerate(people):
        voice = 1000 * (fmt == "m4a") + k
        phrases = [corpus.synthesize_utterance(seed, voice, item) for item in range(4)]
        videos = ["".join(rng.choice(list("abcdefghijkLMNOPQ0123456789_-"), 11))
                  for _ in range(max(1, utterances // 8))]
        for u in range(utterances):
            length = float(rng.uniform(*lengths))
            seconds.append(length)
            folder = os.path.join(root, "raw_wav", subset, "dev", spk, videos[u % len(videos)])
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"{u // len(videos) + 1:05d}.wav")
            sf.write(path, _utterance(rng, phrases, length), SAMPLE_RATE, subtype="PCM_16")
            if fmt == "m4a":
                encode.append(path)
        face_dir = os.path.join(root, subset, "masked_faces", name)
        os.makedirs(face_dir)
        for j in range(faces):
            Image.fromarray(corpus.draw_face(seed, voice, j, size=128)).resize(
                (224, 224), Image.BILINEAR).save(os.path.join(face_dir, f"{j:05d}.jpg"),
                                                 quality=90)
    if encode:
        # AAC at 64 kbit/s mono, VoxCeleb2's codec; the WAVs are removed.
        def to_m4a(path):
            subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", path,
                            "-c:a", "aac", "-b:a", "64k", path[:-4] + ".m4a"], check=True)
            os.remove(path)
        with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            list(pool.map(to_m4a, encode))
    return {"format": fmt, "identities": identities, "utterances": identities * utterances,
            "faces": identities * faces, "mean_seconds": float(np.mean(seconds)),
            "audio_hours": float(np.sum(seconds)) / 3600.0}


def _audio_files(root: str) -> list:
    found = []
    for dirpath, _, names in os.walk(os.path.join(root, "raw_wav")):
        found += [os.path.join(dirpath, n) for n in names]
    return sorted(found)


# ------------------------------------------------------------------------------------------
# Measurements
# ------------------------------------------------------------------------------------------

def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (pool workers, and through
    them ffmpeg: waited-for descendants count too)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure_stages(root: str, sample: int, scratch: str) -> dict:
    """Seconds per item of each stage, in this process, over the first ``sample`` files."""
    from PIL import Image  # noqa: PLC0415

    from keras_sf2f.audio import features, vad  # noqa: PLC0415
    from keras_sf2f.audio import io as audio_io  # noqa: PLC0415
    from keras_sf2f.data import procedural, records  # noqa: PLC0415
    from keras_sf2f.data.prepare import DatasetWriter, IMAGE_EXTENSIONS  # noqa: PLC0415

    paths = _audio_files(root)
    step = max(1, len(paths) // sample)
    paths = paths[::step][:sample]
    stages = ("decode", "vad", "features", "records")
    wall, cpu = dict.fromkeys(stages, 0.0), dict.fromkeys(stages, 0.0)
    mels, speech_seconds = [], 0.0
    audio_io.speech_log_mel(paths[-1])  # warm-up: the feature function is traced once

    def clock():
        return time.perf_counter(), _cpu_seconds()

    def spend(stage, start, end):
        wall[stage] += end[0] - start[0]
        cpu[stage] += end[1] - start[1]

    for path in paths:
        t0 = clock()
        samples = audio_io.load_audio(path)
        t1 = clock()
        speech = vad.webrtc_vad(vad.to_int16(samples), SAMPLE_RATE)
        t2 = clock()
        mel = features.normalize_log_mel(
            features.log_mel_filterbank(np.asarray(speech, np.float32), SAMPLE_RATE).numpy())
        mels.append(np.asarray(mel, np.float32).astype(np.float16))
        t3 = clock()
        spend("decode", t0, t1)
        spend("vad", t1, t2)
        spend("features", t2, t3)
        speech_seconds += len(speech) / SAMPLE_RATE
    out = os.path.join(scratch, "stage_records")
    t0 = clock()
    writer = DatasetWriter(out, {"train": ["x/a"]}, utterance_shards=4, face_shards=1)
    for k, mel in enumerate(mels):
        writer.add_utterance("x/a", f"u{k:05d}", mel, f"raw_wav/{k}.wav")
    writer.close()
    spend("records", t0, clock())
    record_bytes = sum(os.path.getsize(p) for p in
                       records.shard_paths(out, "train", "utterances"))
    shutil.rmtree(out)
    faces = []
    for dirpath, _, names in os.walk(root):
        faces += [os.path.join(dirpath, n) for n in names if n.endswith(IMAGE_EXTENSIONS)]
    faces = sorted(faces)[:sample]
    t0 = clock()
    for path in faces:
        with Image.open(path) as im:
            procedural.face_pngs(np.asarray(im.convert("RGB")), records.IMAGE_SIZES)
    t1 = clock()
    n = len(paths)
    return {"items": n, "seconds_per_utterance": {k: v / n for k, v in wall.items()},
            "cpu_seconds_per_utterance": {k: v / n for k, v in cpu.items()},
            "seconds_per_face": (t1[0] - t0[0]) / max(1, len(faces)),
            "cpu_seconds_per_face": (t1[1] - t0[1]) / max(1, len(faces)),
            "speech_seconds_per_utterance": speech_seconds / len(paths),
            "record_bytes_per_utterance": record_bytes / len(paths)}


def measure_startup(root: str, workers: int) -> tuple:
    """``(wall s, CPU s)`` for a fresh pool of ``workers`` to start (spawn, import
    TensorFlow, the initializer) and read one utterance each (tracing the feature function
    once per worker): the part of a run that does not grow with the data."""
    from keras_sf2f.data import prepare  # noqa: PLC0415

    folder = os.path.dirname(_audio_files(root)[0])
    jobs = [prepare._IdentityJob(f"x/{k}", (folder,), os.path.join(root, "no_faces"), root,
                                 "wav", 100, 1) for k in range(workers)]
    c0, t0 = _cpu_seconds(), time.perf_counter()
    with prepare.parallel_map(prepare._read_voxceleb_identity, jobs, workers,
                              initializer=prepare._init_feature_worker) as results:
        list(results)
    return time.perf_counter() - t0, _cpu_seconds() - c0


def measure_end_to_end(root: str, out: str, workers: int) -> dict:
    from keras_sf2f.data import prepare  # noqa: PLC0415

    c0, t0 = _cpu_seconds(), time.perf_counter()
    info = prepare.prepare_voxceleb(root, out, num_workers=workers, utterance_shards=4,
                                    face_shards=1)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    utterances = sum(s["utterances"] for s in info["splits"].values())
    faces = sum(s["faces"] for s in info["splits"].values())
    return {"workers": workers, "wall_s": wall, "cpu_s": cpu, "utterances": utterances,
            "faces": faces, "skipped": info["skipped"]["counts"],
            "shards": {k: v["sha256"] for k, v in info["shards"].items()}}


def measure_shards(root: str, scratch: str) -> dict:
    """A tree prepared unsharded (1 worker), then in 2 shards (one after the other, 1 worker
    each) and merged; the merged records must be the unsharded run's."""
    from keras_sf2f.data import prepare  # noqa: PLC0415

    unsharded = measure_end_to_end(root, os.path.join(scratch, "unsharded"), 1)
    shutil.rmtree(os.path.join(scratch, "unsharded"))
    reference = unsharded.pop("shards")
    out = os.path.join(scratch, "sharded")
    t0 = time.perf_counter()
    for i in range(2):
        prepare.prepare_voxceleb(root, out, num_workers=1, utterance_shards=4, face_shards=1,
                                 shard_index=i, num_shards=2)
    shards_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    info = prepare.merge_voxceleb_shards(out)
    merge_s = time.perf_counter() - t0
    count = sum(s["utterances"] + s["faces"] for s in info["splits"].values())
    same = {k: v["sha256"] for k, v in info["shards"].items()} == reference
    shutil.rmtree(out)
    return {"unsharded": unsharded, "shards_s": shards_s, "merge_s": merge_s,
            "records": count, "merge_records_per_s": count / merge_s,
            "identical_to_unsharded": same}


# ------------------------------------------------------------------------------------------
# Summary and extrapolation
# ------------------------------------------------------------------------------------------

def _median(values):
    return float(np.median(values)) if values else None


def summarise(result: dict) -> None:
    """Medians per case, and the extrapolation, into ``result``."""
    rows = []
    for fmt in ("wav", "m4a"):
        for workers in result["workers"]:
            runs = [r for r in result["runs"] if r["format"] == fmt and r["workers"] == workers]
            if not runs:
                continue
            wall = _median([r["wall_s"] for r in runs])
            cpu = _median([r["cpu_s"] for r in runs])
            startup, startup_cpu = ((_median(result["startup_s"][str(workers)]),
                                     _median(result["startup_cpu_s"][str(workers)]))
                                    if workers > 1 else (0.0, 0.0))
            n = runs[0]["utterances"]
            rows.append({
                "format": fmt, "workers": workers, "utterances": n, "runs": len(runs),
                "wall_s": wall, "utterances_per_s": n / wall,
                "startup_s": startup,
                "steady_utterances_per_s": n / max(wall - startup, 1e-9),
                # Without the pool's start-up, which a long run pays once.
                "cpu_s_per_utterance": max(cpu - startup_cpu, 0.0) / n,
                "identical_records": len({json.dumps(r["shards"], sort_keys=True)
                                          for r in result["runs"] if r["format"] == fmt}) == 1,
            })
    result["rows"] = rows
    stage_rows = []
    for fmt in ("wav", "m4a"):
        stages = [s for s in result["stages"] if s["format"] == fmt]
        wall = {k: _median([s["seconds_per_utterance"][k] for s in stages])
                for k in ("decode", "vad", "features", "records")}
        cpu = {k: _median([s["cpu_seconds_per_utterance"][k] for s in stages]) for k in wall}
        stage_rows.append({"format": fmt,
                           "ms_per_utterance": {k: v * 1e3 for k, v in wall.items()},
                           "cpu_ms_per_utterance": {k: v * 1e3 for k, v in cpu.items()},
                           "total_ms": sum(wall.values()) * 1e3,
                           "total_cpu_ms": sum(cpu.values()) * 1e3,
                           "face_ms": _median([s["seconds_per_face"] for s in stages]) * 1e3,
                           "face_cpu_ms": _median([s["cpu_seconds_per_face"]
                                                   for s in stages]) * 1e3,
                           "speech_seconds": _median([s["speech_seconds_per_utterance"]
                                                      for s in stages]),
                           "record_kb": _median([s["record_bytes_per_utterance"]
                                                 for s in stages]) / 1024})
    result["stage_rows"] = stage_rows

    # Extrapolation: one worker per core, each as fast as the measured 1-worker rate (the
    # per-utterance work is independent; the main process only writes records, ~0.1 ms
    # each). Two per-core figures: wall rate of 1 worker, and CPU seconds per utterance
    # (process + children), the steadier one on a shared machine.
    one = {r["format"]: r for r in rows if r["workers"] == 1}
    if set(one) != {"wav", "m4a"}:
        return
    per_core = {}
    for fmt, r in one.items():
        length = result["trees"][fmt]["mean_seconds"]
        per_core[fmt] = {
            "wall_utt_per_s": r["utterances_per_s"],
            "cpu_utt_per_s": 1.0 / r["cpu_s_per_utterance"],
            # Scaled to VoxCeleb's ~8 s mean as if every cost grew with length: an upper
            # bound on time (ffmpeg's start-up per file does not grow).
            "length_factor": VOXCELEB_MEAN_SECONDS / length,
        }

    def hours(rate_key, scaled, wav_share):
        total = 0.0
        for fmt, count in (("wav", TARGET_UTTERANCES * wav_share),
                           ("m4a", TARGET_UTTERANCES * (1 - wav_share))):
            rate = per_core[fmt][rate_key] * TARGET_CORES
            if scaled:
                rate /= per_core[fmt]["length_factor"]
            total += count / rate
        return total / 3600.0

    share = VOX1_UTTERANCES / (VOX1_UTTERANCES + VOX2_UTTERANCES)
    merge = result.get("shards", {}).get("merge_records_per_s")
    result["extrapolation"] = {
        "utterances": TARGET_UTTERANCES, "cores": TARGET_CORES, "wav_share": share,
        "per_core": per_core,
        "hours": {
            "as_published_wall": hours("wall_utt_per_s", False, share),
            "as_published_wall_8s": hours("wall_utt_per_s", True, share),
            "as_published_cpu": hours("cpu_utt_per_s", False, share),
            "as_published_cpu_8s": hours("cpu_utt_per_s", True, share),
            "all_wav_wall_8s": hours("wall_utt_per_s", True, 1.0),
            "all_m4a_wall_8s": hours("wall_utt_per_s", True, 0.0),
        },
        "merge_hours": (TARGET_UTTERANCES / merge / 3600.0) if merge else None,
        "memory_gb_unsharded": TARGET_UTTERANCES * VOXCELEB_MEAN_SECONDS * 100 * 40 * 2 / 1e9,
    }


def markdown(result: dict) -> str:
    lines = [f"CPU: {result['cpu_model']} ({result['logical_cpus']} logical CPUs, shared with "
             f"other jobs: rates are lower bounds). {result['date']}.", "",
             f"Command: `{result['command']}`", ""]
    lines += ["| tree | identities | utterances | faces | mean length | audio |",
              "|---|---|---|---|---|---|"]
    for fmt, t in result["trees"].items():
        label = "WAV, for the merge" if fmt == "merge" else fmt.upper()
        lines.append(f"| {label} | {t['identities']} | {t['utterances']} | {t['faces']} | "
                     f"{t['mean_seconds']:.1f} s | {t['audio_hours'] * 60:.0f} min |")
    lines += ["", "Stages, one process, one TensorFlow thread (median over rounds), CPU ms per "
              "utterance (this process and its children, i.e. ffmpeg too; wall ms in "
              "brackets, inflated by the machine's other jobs):", "",
              "| format | decode | VAD | features | records | sum | utt/s per core | "
              "face PNGs (per face) | speech after VAD | record size |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for s in result.get("stage_rows", []):
        ms, cpu = s["ms_per_utterance"], s["cpu_ms_per_utterance"]
        cells = [f"{cpu[k]:.1f} ({ms[k]:.1f})" for k in ("decode", "vad", "features", "records")]
        lines.append(f"| {s['format'].upper()} | {' | '.join(cells)} | "
                     f"{s['total_cpu_ms']:.1f} ({s['total_ms']:.1f}) | "
                     f"{1e3 / s['total_cpu_ms']:.0f} | {s['face_cpu_ms']:.1f} "
                     f"({s['face_ms']:.1f}) ms | "
                     f"{s['speech_seconds']:.1f} s | {s['record_kb']:.0f} KB |")
    lines += ["", "End to end (`prepare_voxceleb`: decode, VAD, features, faces, records; "
              "median over rounds):", "",
              "| format | workers | utterances | wall s | utt/s | pool start-up s | "
              "utt/s without start-up | CPU / utt without start-up | same records |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in result.get("rows", []):
        lines.append(f"| {r['format'].upper()} | {r['workers']} | {r['utterances']} | "
                     f"{r['wall_s']:.1f} | {r['utterances_per_s']:.1f} | {r['startup_s']:.1f} | "
                     f"{r['steady_utterances_per_s']:.1f} | "
                     f"{r['cpu_s_per_utterance'] * 1e3:.1f} ms | "
                     f"{'yes' if r['identical_records'] else 'NO'} |")
    sh = result.get("shards")
    if sh:
        u = sh["unsharded"]
        lines += ["", f"Sharded: the merge tree ({u['utterances']} WAV utterances of 7-9 s) "
                      f"took {u['wall_s']:.1f} s unsharded with 1 worker "
                      f"({u['utterances'] / u['wall_s']:.0f} utt/s, CPU "
                      f"{u['cpu_s'] / u['utterances'] * 1e3:.1f} ms/utt), {sh['shards_s']:.1f} s "
                      f"in 2 shards (one after the other, 1 worker each); the merge "
                      f"{sh['merge_s']:.1f} s ({sh['merge_records_per_s']:.0f} records/s). "
                      f"Merged records identical to the unsharded run's: "
                      f"{'yes' if sh['identical_to_unsharded'] else 'NO'}."]
    ex = result.get("extrapolation")
    if ex:
        h = ex["hours"]
        pc = ex["per_core"]
        lines += ["", f"Extrapolation to VoxCeleb1+2, {ex['utterances']:,} utterances, on "
                      f"{ex['cores']} cores: {ex['wav_share']:.0%} WAV (VoxCeleb1) and the "
                      f"rest M4A (VoxCeleb2), as published. Assumption: {ex['cores']} workers "
                      f"each as fast as one measured worker (linear scaling; every "
                      f"utterance is independent work, the main process only writes "
                      f"records), faces and I/O not limiting. Per core: WAV "
                      f"{pc['wav']['wall_utt_per_s']:.0f} utt/s (wall) / "
                      f"{pc['wav']['cpu_utt_per_s']:.0f} (CPU time), M4A "
                      f"{pc['m4a']['wall_utt_per_s']:.0f} / {pc['m4a']['cpu_utt_per_s']:.0f}.",
                  "",
                  "| basis | hours |", "|---|---|",
                  f"| 1-worker wall rate, measured lengths | {h['as_published_wall']:.1f} |",
                  f"| 1-worker wall rate, scaled to 8 s utterances (upper bound) | "
                  f"{h['as_published_wall_8s']:.1f} |",
                  f"| CPU seconds per utterance, measured lengths | {h['as_published_cpu']:.1f} |",
                  f"| CPU seconds per utterance, scaled to 8 s | {h['as_published_cpu_8s']:.1f} |",
                  f"| all WAV (VoxCeleb2 converted first), 8 s | {h['all_wav_wall_8s']:.1f} |",
                  f"| all M4A, 8 s | {h['all_m4a_wall_8s']:.1f} |"]
        if ex.get("merge_hours") is not None:
            lines += [f"| merge, one process, after all shards | {ex['merge_hours']:.2f} |"]
        lines += ["", f"Memory: a preparation holds its identities' log mels until it writes "
                      f"them, ~{ex['memory_gb_unsharded']:.0f} GB for all of VoxCeleb1+2 in one "
                      f"run (8 s x 100 frames/s x 40 bands x 2 bytes per utterance); n shards "
                      f"hold 1/n each."]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small trees and one round: a smoke test, not a measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--wav_identities", type=int, default=16)
    parser.add_argument("--m4a_identities", type=int, default=8)
    parser.add_argument("--utterances", type=int, default=40, help="per identity")
    parser.add_argument("--faces", type=int, default=4, help="per identity")
    parser.add_argument("--merge_utterances", type=int, default=2400,
                        help="size of the tree (7-9 s WAV utterances) prepared in 2 shards "
                             "and merged")
    parser.add_argument("--out_dir", default=os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "voxceleb_prepare_results"))
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.wav_identities, args.m4a_identities, args.utterances = 1, 4, 2, 6
        args.merge_utterances = 40
    workers = [int(w) for w in args.workers.split(",")]
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is needed to make and read the M4A tree (apt install ffmpeg)")

    # One TensorFlow thread here too, as in each worker: the 1-worker case is then one
    # core's work, the basis of the extrapolation.
    import tensorflow as tf  # noqa: PLC0415
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from absl import logging as absl_logging  # noqa: PLC0415
    absl_logging.set_verbosity(absl_logging.WARNING)  # no progress lines in the timings

    from keras_sf2f.machine import cpu_model  # noqa: PLC0415

    def log(line):
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    result = {"cpu_model": cpu_model(), "logical_cpus": os.cpu_count(),
              "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
              "command": "python benchmarks/bench_voxceleb_prepare.py " + " ".join(sys.argv[1:]),
              "workers": workers, "trees": {}, "stages": [], "runs": [],
              "startup_s": {str(w): [] for w in workers if w > 1},
              "startup_cpu_s": {str(w): [] for w in workers if w > 1}}
    scratch = tempfile.mkdtemp(prefix="bench_voxceleb_")
    try:
        roots = {}
        for fmt, identities in (("wav", args.wav_identities), ("m4a", args.m4a_identities)):
            roots[fmt] = os.path.join(scratch, f"VoxCeleb_{fmt}")
            t0 = time.perf_counter()
            result["trees"][fmt] = build_tree(roots[fmt], fmt, identities, args.utterances,
                                              args.faces)
            log(f"built the {fmt} tree: {result['trees'][fmt]} in "
                f"{time.perf_counter() - t0:.0f} s")
        for round_ in range(args.rounds):
            for fmt, root in roots.items():
                stages = measure_stages(root, 60 if fmt == "wav" else 30, scratch)
                result["stages"].append({"format": fmt, "round": round_, **stages})
                log(f"round {round_} {fmt} stages, CPU: "
                    + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in
                                stages["cpu_seconds_per_utterance"].items()))
                for w in workers:
                    if w > 1:
                        startup, startup_cpu = measure_startup(root, w)
                        result["startup_s"][str(w)].append(startup)
                        result["startup_cpu_s"][str(w)].append(startup_cpu)
                    out = os.path.join(scratch, f"out_{fmt}_{w}")
                    run = measure_end_to_end(root, out, w)
                    shutil.rmtree(out)
                    result["runs"].append({"format": fmt, "round": round_, **run})
                    log(f"round {round_} {fmt} {w} worker(s): {run['utterances']} utterances "
                        f"in {run['wall_s']:.1f} s = {run['utterances'] / run['wall_s']:.1f}"
                        f" utt/s, CPU {run['cpu_s'] / run['utterances'] * 1e3:.1f} ms/utt"
                        + (f", pool start-up {startup:.1f} s" if w > 1 else ""))
        # Sharding and the merge on a tree of VoxCeleb-sized utterances (7-9 s: records of
        # the size the merge would move), also a 1-worker WAV rate at that length.
        merge_root = os.path.join(scratch, "VoxCeleb_merge")
        per_identity = 100
        result["trees"]["merge"] = build_tree(
            merge_root, "wav", max(2, args.merge_utterances // per_identity),
            min(per_identity, args.merge_utterances), 2, seed=1, lengths=(7.0, 9.0))
        log(f"built the merge tree: {result['trees']['merge']}")
        result["shards"] = measure_shards(merge_root, scratch)
        log(f"shards: {result['shards']}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summarise(result)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    text = "# VoxCeleb preparation speed\n\n" + markdown(result) + "\n"
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
