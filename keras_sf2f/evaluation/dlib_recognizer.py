"""dlib's face recogniser on every core: helper processes fed over pipes.

dlib's ResNet descriptor network holds Python's GIL while it runs (two threads take as long
as one), and it is most of an evaluation's time on 2 cores: about 90 ms per 150x150 chip.
``DlibRecognizer(processes=n)`` starts ``n`` helper processes
(``python -m keras_sf2f.evaluation.dlib_recognizer``), each with its own copy of the network,
and splits every batch of chips between them.

* Exact: without jitter a descriptor depends on its chip alone, so splitting a batch changes
  no value (``tests/test_dlib_recognizer.py`` compares them bit for bit).
* No pickle: chips go to a helper and descriptors come back as NumPy ``.npy`` arrays read with
  ``allow_pickle=False``, each behind an 8-byte length.
* Light helpers: this module imports only NumPy (and dlib in the helper), never TensorFlow, so
  a helper starts in about half a second and holds one copy of the 22 MB network.
* Robust: if a helper dies or answers with something else, the recogniser logs a warning, stops
  its helpers and computes in this process from then on; a closed recogniser (``close()``, or
  the interpreter exiting) ends its helpers by closing their input.

``processes=1`` computes in this process, as the evaluation did before.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import struct
import subprocess
import sys
import threading
import weakref

import numpy as np

CHIP_SIZE = 150
DESCRIPTOR_DIM = 128
# Fewer chips than this per helper are computed in this process: below it, shipping them costs
# more than it saves.
MIN_CHIPS_PER_HELPER = 4
_LENGTH = struct.Struct("<Q")


#: dlib's 5-point landmark model, in the same package (aligned chips, ``DlibEmbedder``).
LANDMARK_MODEL = "shape_predictor_5_face_landmarks.dat"


def dlib_model_path(filename: str = "dlib_face_recognition_resnet_model_v1.dat") -> str:
    """Path of a dlib model file (default the recogniser's) inside the installed
    ``face_recognition_models`` package (found without importing it: its ``__init__`` needs
    setuptools' ``pkg_resources``, which current setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the face_recognition_models package is not installed "
                          "(pip install face_recognition_models)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", filename)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing from face_recognition_models")
    return path


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def load_network():
    try:
        import dlib  # noqa: PLC0415 - optional dependency (dlib-bin)
    except ImportError as e:
        raise ImportError("dlib's face recogniser needs the dlib-bin and face_recognition_models "
                          "packages (pip install dlib-bin face_recognition_models)") from e
    return dlib.face_recognition_model_v1(dlib_model_path())


def compute_descriptors(network, chips: np.ndarray, num_jitters: int = 0) -> np.ndarray:
    """uint8 ``[N, 150, 150, 3]`` chips -> float32 ``[N, 128]`` descriptors (not normalised)."""
    if len(chips) == 0:
        return np.zeros([0, DESCRIPTOR_DIM], np.float32)
    descriptors = network.compute_face_descriptor(
        [np.ascontiguousarray(c) for c in chips], int(num_jitters))
    return np.asarray([np.asarray(d) for d in descriptors], np.float32)


# ------------------------------------------------------------------------------------------
# The pipe protocol: an 8-byte little-endian length, then that many bytes of one .npy array.
# ------------------------------------------------------------------------------------------

def write_array(stream, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    payload = buffer.getvalue()
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _read_exactly(stream, count: int) -> bytes:
    parts, left = [], count
    while left:
        part = stream.read(left)
        if not part:
            raise EOFError(f"the stream ended {left} bytes short of {count}")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def read_array(stream) -> np.ndarray | None:
    """The next array, or None at a clean end of the stream (before a length)."""
    head = stream.read(_LENGTH.size)
    if not head:
        return None
    if len(head) < _LENGTH.size:
        head += _read_exactly(stream, _LENGTH.size - len(head))
    (length,) = _LENGTH.unpack(head)
    return np.load(io.BytesIO(_read_exactly(stream, length)), allow_pickle=False)


def _helper_main() -> None:
    """A helper: requests ``[jitters]`` then chips, answers descriptors, until its input ends."""
    network = load_network()
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        jitters = read_array(source)
        if jitters is None:
            return
        chips = read_array(source)
        if chips is None:
            return
        write_array(sink, compute_descriptors(network, chips, int(jitters[0])))


# ------------------------------------------------------------------------------------------
# The parent side
# ------------------------------------------------------------------------------------------

class HelperError(RuntimeError):
    """A helper process died or answered with something other than descriptors."""


class _Helper:
    def __init__(self):
        env = dict(os.environ)
        # One thread per helper: the helpers are the parallelism.
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        # The package's own directory first, so that the helper runs this very code.
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
        # stderr is the caller's: a helper that fails to start says why there.
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env)

    def send(self, chips: np.ndarray, num_jitters: int) -> None:
        try:
            write_array(self.process.stdin, np.asarray([num_jitters], np.int64))
            write_array(self.process.stdin, chips)
        except (BrokenPipeError, OSError) as e:
            raise HelperError(f"helper {self.process.pid} stopped reading: {e}") from None

    def receive(self, count: int) -> np.ndarray:
        try:
            out = read_array(self.process.stdout)
        except (EOFError, OSError, ValueError) as e:
            raise HelperError(f"helper {self.process.pid} answered badly: {e}") from None
        if out is None:
            raise HelperError(f"helper {self.process.pid} ended (exit code "
                              f"{self.process.poll()})")
        if out.dtype != np.float32 or out.shape != (count, DESCRIPTOR_DIM):
            raise HelperError(f"helper {self.process.pid} answered {out.dtype} "
                              f"{list(out.shape)} for {count} chips")
        return out

    def close(self) -> None:
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def _close_helpers(helpers: list) -> None:
    for helper in helpers:
        helper.close()
    helpers.clear()


class DlibRecognizer:
    """dlib's descriptor network, in this process or split over ``processes`` helpers.

    ``processes``: helper processes (default: the cores available, at most 8; 1 computes in
    this process). Helpers start on the first batch large enough to split."""

    def __init__(self, processes: int | None = None):
        self.processes = max(1, int(processes if processes is not None
                                    else min(available_cores(), 8)))
        self._network = None
        self._helpers: list[_Helper] = []
        self._lock = threading.Lock()
        # Ends the helpers when the recogniser is collected or the interpreter exits.
        weakref.finalize(self, _close_helpers, self._helpers)

    @property
    def network(self):
        if self._network is None:
            self._network = load_network()
        return self._network

    def compute(self, chips: np.ndarray, num_jitters: int = 0) -> np.ndarray:
        """uint8 ``[N, 150, 150, 3]`` chips -> float32 ``[N, 128]`` descriptors."""
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3) or \
                chips.dtype != np.uint8:
            raise ValueError(f"chips must be uint8 [N, {CHIP_SIZE}, {CHIP_SIZE}, 3], got "
                             f"{chips.dtype} {list(chips.shape)}")
        parts = min(self.processes, len(chips) // MIN_CHIPS_PER_HELPER)
        if parts < 2:
            return compute_descriptors(self.network, chips, num_jitters)
        with self._lock:
            try:
                return self._split(chips, parts, num_jitters)
            except HelperError as e:
                logging.warning("dlib recogniser: %s; computing in this process from now on",
                                e)
                _close_helpers(self._helpers)
                self.processes = 1
        return compute_descriptors(self.network, chips, num_jitters)

    def _split(self, chips: np.ndarray, parts: int, num_jitters: int) -> np.ndarray:
        while len(self._helpers) < parts:
            self._helpers.append(_Helper())
        pieces = np.array_split(chips, parts)
        for helper, piece in zip(self._helpers, pieces):
            helper.send(piece, num_jitters)
        return np.concatenate([helper.receive(len(piece))
                               for helper, piece in zip(self._helpers, pieces)])

    def close(self) -> None:
        """Ends the helper processes (a later batch starts them again)."""
        with self._lock:
            _close_helpers(self._helpers)


if __name__ == "__main__":
    _helper_main()
