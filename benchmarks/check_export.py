"""An independent check of an exported voice-to-face SavedModel on a prepared split.

    .venv/bin/python benchmarks/check_export.py --data_dir=runs/demo/data \
        --export_dir=runs/demo/export/sf2f_demo/1 [--split=test] [--runs=10] \
        [--output=check.json] [--faces_npz=faces.npz]

Independent on purpose: it imports nothing from ``keras_sf2f``. It reads the split's
TFRecords itself (``log_mel``: float16 little-endian [frames, 40]; ``png_64``), runs only the
SavedModel's ``predict_mel`` signature, and scores the faces with dlib's stock pipeline,
which the evaluation does not use: HOG detection on a 256 px bicubic upscale, the 5-point
landmarks (on the whole picture when no face is found), ``get_face_chip``-style alignment
inside ``compute_face_descriptor``, and the 128-D descriptor. The evaluation
(``keras_sf2f/evaluation``) instead gives dlib's network the whole 64 px picture resized to a
150 px chip, unaligned. So this measures what someone checking an export from the outside
would, and says how far the project's own figures carry.

Figures (JSON on stdout, and in ``--output``):

* ``detection``: share of generated faces in which dlib's HOG frontal detector (threshold 0)
  finds a face; ``ground_truth_detection`` the same for the split's photos;
* ``dlib_recall@10``: share of identities whose own ground truth (the mean of its photos'
  unit descriptors, re-normalised) is among the 10 nearest of the split's identities to the
  generated face's descriptor, by cosine; chance 10 / identities;
* ``pixel_diversity_ratio``: mean RMS pixel distance (RGB in [0, 1]) between two identities'
  generated faces over the same for their first photos; 0 = one face for all.

Protocols: ``all_windows``, every whole 125-frame window of the identity's utterances in
utterance-id order, at most 20, one run; ``crops_5s``, per run one uniformly placed
500-frame crop (4 windows) of the identity's utterances joined in id order, mean ± std over
``--runs`` runs (seeded).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import io
import json
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dlib  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

WINDOW = 125       # frames per window, the model's input unit
MAX_WINDOWS = 20   # the export's window capacity
CROP_WINDOWS = 4   # 5 s = 500 frames
UPSCALE = 256      # dlib's HOG window is 80 px: too large for a 64 px face at its own size


def dlib_models():
    """dlib's detector, 5-point landmark model and recogniser, from the installed
    face_recognition_models package's data files (found without importing the package)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        sys.exit("check_export: the face_recognition_models package is not installed")
    models = os.path.join(list(spec.submodule_search_locations)[0], "models")
    return (dlib.get_frontal_face_detector(),
            dlib.shape_predictor(os.path.join(models, "shape_predictor_5_face_landmarks.dat")),
            dlib.face_recognition_model_v1(
                os.path.join(models, "dlib_face_recognition_resnet_model_v1.dat")))


def read_split(data_dir: str, split: str):
    """({identity: [(utterance id, float32 [frames, 40])]}, {identity: [uint8 64x64x3]})."""
    def examples(kind):
        paths = sorted(glob.glob(os.path.join(data_dir, f"{split}-{kind}-*.tfrecord")))
        if not paths:
            sys.exit(f"check_export: no {split}-{kind}-*.tfrecord in {data_dir}")
        for raw in tf.data.TFRecordDataset(paths):
            yield tf.train.Example.FromString(raw.numpy()).features.feature

    def text(feature):
        return feature.bytes_list.value[0].decode()

    utterances, faces = {}, {}
    for ex in examples("utterances"):
        frames = int(ex["num_frames"].int64_list.value[0])
        mel = np.frombuffer(ex["log_mel"].bytes_list.value[0], "<f2").astype(np.float32)
        utterances.setdefault(text(ex["identity"]), []).append(
            (text(ex["utterance_id"]), mel.reshape(frames, -1)))
    for ex in examples("faces"):
        png = ex["png_64"].bytes_list.value[0]
        faces.setdefault(text(ex["identity"]), []).append(
            np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))
    if sorted(utterances) != sorted(faces):
        sys.exit("check_export: the split's utterances and faces name different identities")
    return {k: sorted(v, key=lambda u: u[0]) for k, v in utterances.items()}, faces


def all_windows(utterances) -> np.ndarray:
    windows = [mel[k * WINDOW:(k + 1) * WINDOW]
               for _, mel in utterances for k in range(mel.shape[0] // WINDOW)]
    if not windows:
        sys.exit("check_export: an identity has no whole 125-frame window")
    return np.stack(windows[:MAX_WINDOWS])


def random_crop(utterances, rng) -> np.ndarray:
    """One uniformly placed 500-frame crop of the identity's speech, its utterances joined in
    id order (the corpus's utterances are about 3 s, so a 5 s crop spans two); an identity
    with less speech gives all its whole windows."""
    speech = np.concatenate([mel for _, mel in utterances])
    frames = CROP_WINDOWS * WINDOW
    if speech.shape[0] < frames:
        return all_windows(utterances)[:CROP_WINDOWS]
    start = rng.integers(speech.shape[0] - frames + 1)
    return speech[start:start + frames].reshape(CROP_WINDOWS, WINDOW, -1)


def to_uint8(image) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


class DlibScorer:
    def __init__(self):
        self.detector, self.landmarks, self.recogniser = dlib_models()

    def upscale(self, image_u8):
        return np.asarray(Image.fromarray(image_u8).resize((UPSCALE, UPSCALE), Image.BICUBIC))

    def detected(self, image_u8) -> bool:
        return len(self.detector(self.upscale(image_u8), 0)) > 0

    def descriptor(self, image_u8) -> np.ndarray:
        big = self.upscale(image_u8)
        found = self.detector(big, 0)
        box = found[0] if len(found) else dlib.rectangle(0, 0, UPSCALE - 1, UPSCALE - 1)
        d = np.asarray(self.recogniser.compute_face_descriptor(big, self.landmarks(big, box)))
        return d / np.linalg.norm(d)


def mean_pairwise_rms(images: np.ndarray) -> float:
    flat = images.reshape(len(images), -1).astype(np.float64)
    distances = [np.sqrt(np.mean((flat[i] - flat[j]) ** 2))
                 for i in range(len(flat)) for j in range(i + 1, len(flat))]
    return float(np.mean(distances))


def recall_at_10(generated: np.ndarray, truth: np.ndarray) -> float:
    """Rows of both are unit descriptors, row i of each the same identity."""
    similarity = generated @ truth.T
    rank = (similarity > np.diag(similarity)[:, None]).sum(axis=1)
    return float(np.mean(rank < 10))


def score(faces01: np.ndarray, truth: np.ndarray, truth_first01: np.ndarray, scorer) -> dict:
    pixels = [to_uint8(f) for f in faces01]
    descriptors = np.stack([scorer.descriptor(p) for p in pixels])
    return {"detection": float(np.mean([scorer.detected(p) for p in pixels])),
            "dlib_recall@10": recall_at_10(descriptors, truth),
            "pixel_diversity_ratio": mean_pairwise_rms(faces01)
            / mean_pairwise_rms(truth_first01)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="prepared records (prepare_data.py)")
    parser.add_argument("--export_dir", required=True,
                        help="a SavedModel version directory (export_savedmodel.py)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--runs", type=int, default=10, help="5 s crop runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the JSON here")
    parser.add_argument("--faces_npz", default=None,
                        help="write the generated faces (identities, all_windows, crops_5s)")
    args = parser.parse_args(argv)

    if not os.path.isfile(os.path.join(args.export_dir, "saved_model.pb")):
        sys.exit(f"check_export: no saved_model.pb in {args.export_dir} (give the export's "
                 f"version directory, e.g. runs/demo/export/sf2f_demo/1)")
    utterances, photos = read_split(args.data_dir, args.split)
    identities = sorted(utterances)
    predict = tf.saved_model.load(args.export_dir).signatures["predict_mel"]

    def draw(windows) -> np.ndarray:
        out = predict(log_mel=tf.constant(windows[None], tf.float32))
        return np.clip(out["image"].numpy()[0], 0.0, 1.0)

    scorer = DlibScorer()
    truth = []
    for name in identities:
        mean = np.mean([scorer.descriptor(p) for p in photos[name]], axis=0)
        truth.append(mean / np.linalg.norm(mean))
    truth = np.stack(truth)
    truth_first01 = np.stack([photos[n][0] for n in identities]).astype(np.float64) / 255.0

    result = {"split": args.split, "identities": len(identities),
              "chance_recall@10": min(1.0, 10 / len(identities)),
              "ground_truth_detection": float(np.mean(
                  [scorer.detected(p) for n in identities for p in photos[n]]))}
    whole = np.stack([draw(all_windows(utterances[n])) for n in identities])
    result["all_windows"] = score(whole, truth, truth_first01, scorer)
    rng = np.random.default_rng(args.seed)
    crops, per_run = [], []
    for _ in range(args.runs):
        faces = np.stack([draw(random_crop(utterances[n], rng)) for n in identities])
        crops.append(faces)
        per_run.append(score(faces, truth, truth_first01, scorer))
    result["crops_5s"] = {key: {"mean": float(np.mean([r[key] for r in per_run])),
                                "std": float(np.std([r[key] for r in per_run])),
                                "runs": len(per_run)}
                          for key in per_run[0]} if per_run else {}
    if args.faces_npz:
        np.savez_compressed(args.faces_npz, identities=np.asarray(identities),
                            all_windows=whole, crops_5s=np.stack(crops) if crops else whole[:0])
    text = json.dumps(result, indent=1)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
