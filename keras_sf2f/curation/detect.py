"""Faces, landmarks and pupils.

Three package-shipped models, each for what it does best (measured on real photos and on the
procedural corpus's drawn faces, whose pupils are known exactly):

1. Detection and counting: MTCNN (``mtcnn`` package; P-Net image pyramid, so faces from ~20 px
   to the whole frame, several per image) united with MediaPipe's BlazeFace full-range and
   short-range detectors. MTCNN alone finds every face of insightface's group photo but only
   ~60 % of the drawn corpus faces; BlazeFace finds all drawn faces but misses small faces in
   large frames. A face found by several detectors counts once.
2. Landmarks: BlazeFace short-range run again on an upright crop around each face gives six
   keypoints (both eyes, nose tip, mouth centre, both ear tragions); MTCNN adds its nose and
   mouth corners when it found the face.
3. Pupils: the detectors' eye points are eye centres, a few pixels from the pupil. MediaPipe's
   iris landmark model, run on a 64x64 crop around each eye (three passes, each re-centred on
   the last estimate, averaged over the crop and its mirror image), gives the iris centre.
   Measured on drawn faces: about 1 % of the inter-pupil distance, against 5-10 % for the
   detectors' eye points.

All coordinates are pixel indices of the original image (x = column, y = row); "left" and
"right" mean image left and image right.
"""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np
from PIL import Image

from keras_sf2f.curation import align
from keras_sf2f.curation.models import TFLiteModel, model_path
from keras_sf2f.image_ranges import uint8_to_unit_np

# Largest distance (inter-pupil distances) between the pupils and the eyes BlazeFace finds on
# the aligned view for the landmarks to count as verified (BlazeFace's eye points are eye
# centres: 0.03-0.16 from correct pupils on drawn faces and real photos, 0.4 and more when
# the pupils are wrong).
VERIFY_TOLERANCE = 0.3
BLAZEFACE_KEYPOINTS = ("eye_left", "eye_right", "nose", "mouth", "ear_left", "ear_right")


@dataclasses.dataclass
class Detection:
    box: tuple            # (x0, y0, x1, y1)
    score: float
    source: str           # "mtcnn", "blazeface_short", "blazeface_full" or a "+"-join
    keypoints: dict       # name -> (x, y); at least eye_left / eye_right

    @property
    def size(self) -> float:
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def centre(self) -> np.ndarray:
        return np.array([(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2])

    def to_json(self) -> dict:
        return {"box": [round(float(v), 1) for v in self.box], "score": round(self.score, 4),
                "source": self.source,
                "keypoints": {k: [round(float(v[0]), 2), round(float(v[1]), 2)]
                              for k, v in self.keypoints.items()}}


@dataclasses.dataclass
class Landmarks:
    pupils: np.ndarray        # [[x_left, y_left], [x_right, y_right]]
    keypoints: dict           # name -> (x, y): BlazeFace's six (+ MTCNN's when available)
    landmark_score: float     # BlazeFace score on the face crop (0 if it found nothing)
    iris_ok: bool = True      # False: the iris model drifted, pupils = detector eye centres
    verify_error: float = 0.0  # BlazeFace eyes on the aligned view vs the pupils, in IODs

    @property
    def reliable(self) -> bool:
        return self.iris_ok and self.verify_error <= VERIFY_TOLERANCE

    @property
    def interpupil_distance(self) -> float:
        return float(np.hypot(*(self.pupils[1] - self.pupils[0])))

    def pose(self) -> dict:
        """Left/right symmetry in the frame where the pupils are horizontal, in units of the
        inter-pupil distance: the horizontal offsets from the pupils' midpoint of the nose
        tip, of the mouth centre and of the ear tragions' midpoint (all 0 for a frontal
        face; a yaw moves them sideways), the nose's height below the eye line relative to
        the mouth's (pitch, recorded only), and ``asymmetry`` = |nose - ear / 2|, the
        number the pose filter thresholds (0.2 is about 17-20 degrees of yaw)."""
        mid = self.pupils.mean(axis=0)
        axis = self.pupils[1] - self.pupils[0]
        iod = float(np.hypot(*axis))
        ex = axis / iod
        ey = np.array([-ex[1], ex[0]])

        def uv(p):
            d = np.asarray(p, np.float64) - mid
            return float(d @ ex) / iod, float(d @ ey) / iod

        out = {}
        noses = [self.keypoints[k] for k in ("nose", "mtcnn_nose") if k in self.keypoints]
        if noses:
            out["nose_offset"] = float(np.mean([uv(p)[0] for p in noses]))
        mouths = [self.keypoints["mouth"]] if "mouth" in self.keypoints else []
        if "mtcnn_mouth_left" in self.keypoints and "mtcnn_mouth_right" in self.keypoints:
            mouths.append((np.asarray(self.keypoints["mtcnn_mouth_left"], np.float64)
                           + self.keypoints["mtcnn_mouth_right"]) / 2)
        if mouths:
            out["mouth_offset"] = float(np.mean([uv(p)[0] for p in mouths]))
        if "ear_left" in self.keypoints and "ear_right" in self.keypoints:
            out["ear_offset"] = float(np.mean([uv(self.keypoints[k])[0]
                                               for k in ("ear_left", "ear_right")]))
        if noses and mouths:
            nv = np.mean([uv(p)[1] for p in noses])
            mv = np.mean([uv(p)[1] for p in mouths])
            out["nose_height_ratio"] = float(nv / mv) if mv > 1e-6 else float("nan")
        # A yaw moves the nose tip (in front of the eyes) one way and the ear tragions
        # (behind them) the other way: their difference is the yaw signal, twice as strong
        # and less noisy than either (measured on drawn faces of known yaw).
        if "nose_offset" in out:
            yaw = out["nose_offset"] - 0.5 * out.get("ear_offset", 0.0)
            out["asymmetry"] = float(abs(yaw))
        else:
            out["asymmetry"] = float("nan")
        return out


def patch_matrix(centre, side: float, angle: float, n: int, flip: bool = False) -> np.ndarray:
    """Source -> patch similarity for an ``n`` x ``n`` patch of side ``side`` source pixels,
    centred on ``centre``, rotated by ``angle`` (radians, the direction of the patch's x axis
    in the source), optionally mirrored left-right."""
    c, s = math.cos(angle), math.sin(angle)
    k = side / n
    m = np.array([[c * k, -s * k], [s * k, c * k]])  # patch offset -> source offset
    if flip:
        m = m @ np.diag([-1.0, 1.0])
    half = (n - 1) / 2.0
    to_src = np.concatenate([m, (np.asarray(centre, np.float64) - m @ [half, half])[:, None]], 1)
    return align.invert(to_src)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def _anchors(input_size: int, layers) -> np.ndarray:
    """BlazeFace SSD anchor centres (normalised): per (stride, anchors per cell)."""
    out = []
    for stride, per_cell in layers:
        g = input_size // stride
        for y in range(g):
            for x in range(g):
                out.extend([((x + 0.5) / g, (y + 0.5) / g)] * per_cell)
    return np.array(out)


class BlazeFace:
    """MediaPipe's BlazeFace detector (short range: 128x128 input, faces within ~2 m; full
    range: 192x192, faces up to ~5 m), decoded as MediaPipe's face_detection graphs do: square
    letterbox, input in [-1, 1], box centre/size and six keypoints offset from fixed anchors,
    sigmoid score, non-maximum suppression."""

    def __init__(self, kind: str, model_dir: str | None = None):
        if kind == "short":
            self.model = TFLiteModel(model_path("face_detection_short_range.tflite", model_dir))
            self.anchors = _anchors(128, [(8, 2), (16, 6)])
        elif kind == "full":
            self.model = TFLiteModel(model_path("face_detection_full_range_sparse.tflite",
                                                model_dir))
            self.anchors = _anchors(192, [(4, 1)])
        else:
            raise ValueError(kind)
        self.kind = kind
        self.n = self.model.input_shape[0]

    def raw(self, square: np.ndarray):
        """Scores [A] and decoded boxes/keypoints [A, 16] in [0, 1] square coordinates."""
        x = np.asarray(Image.fromarray(square).resize((self.n, self.n),
                                                      Image.Resampling.BILINEAR), np.float32)
        outs = list(self.model(x / 127.5 - 1.0).values())
        reg, cls = (outs[0], outs[1]) if outs[0].shape[-1] == 16 else (outs[1], outs[0])
        scores = _sigmoid(cls[:, 0])
        dec = reg / self.n
        dec[:, 0:2] += self.anchors
        dec[:, 4:16] += np.tile(self.anchors, (1, 6))
        return scores, dec

    def detect_square(self, square: np.ndarray, threshold: float):
        """Detections in a square uint8 image, in its pixel-index coordinates."""
        s = square.shape[0]
        scores, dec = self.raw(square)
        idx = np.where(scores >= threshold)[0]
        out = []
        for i in idx:
            c = dec[i, 0:2] * s - 0.5
            w, h = dec[i, 2] * s, dec[i, 3] * s
            kp = dec[i, 4:16].reshape(6, 2) * s - 0.5
            out.append(Detection((c[0] - w / 2, c[1] - h / 2, c[0] + w / 2, c[1] + h / 2),
                                 float(scores[i]), f"blazeface_{self.kind}",
                                 {k: kp[j] for j, k in enumerate(BLAZEFACE_KEYPOINTS)}))
        return nms(out, 0.3)

    def detect(self, image: np.ndarray, threshold: float):
        """Detections in any image (letterboxed to a square first)."""
        h, w = image.shape[:2]
        s = max(h, w)
        square = np.zeros((s, s, 3), np.uint8)
        oy, ox = (s - h) // 2, (s - w) // 2
        square[oy:oy + h, ox:ox + w] = image
        dets = self.detect_square(square, threshold)
        for d in dets:
            d.box = (d.box[0] - ox, d.box[1] - oy, d.box[2] - ox, d.box[3] - oy)
            d.keypoints = {k: v - [ox, oy] for k, v in d.keypoints.items()}
        return dets


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(dets, iou: float):
    keep = []
    for d in sorted(dets, key=lambda d: -d.score):
        if all(_iou(d.box, k.box) <= iou for k in keep):
            keep.append(d)
    return keep


def same_face(a: Detection, b: Detection) -> bool:
    """Two detectors' boxes are one face when their centres are closer than half the larger
    box and their sizes agree within 2.5x (box conventions differ between detectors)."""
    dist = float(np.hypot(*(a.centre - b.centre)))
    big, small = max(a.size, b.size), max(min(a.size, b.size), 1e-6)
    return dist < 0.5 * big and big / small < 2.5


def merge(groups) -> list:
    """One Detection per face from several detectors' lists (earlier lists win the box and
    keypoints; the score is the best one; ``source`` names every detector that saw it)."""
    faces = []
    for dets in groups:
        for d in dets:
            for f in faces:
                if same_face(f, d):
                    if d.source not in f.source.split("+"):
                        f.source += "+" + d.source
                    f.score = max(f.score, d.score)
                    for k, v in d.keypoints.items():
                        f.keypoints.setdefault(f"{d.source}:{k}", v)
                    break
            else:
                faces.append(Detection(d.box, d.score, d.source, dict(d.keypoints)))
    return faces


class FaceAnalyzer:
    """Detection, counting, landmarks and pupils for one image at a time.

    Thread-safe by a lock (TFLite interpreters and the MTCNN graphs are not re-entrant).
    """

    def __init__(self, model_dir: str | None = None, *, use_mtcnn: bool = True,
                 mtcnn_min_score: float = 0.9, blazeface_min_score: float = 0.6,
                 detect_max_side: int = 1024, detect_min_side: int = 256,
                 iris_passes: int = 3):
        self.blaze_short = BlazeFace("short", model_dir)
        self.blaze_full = BlazeFace("full", model_dir)
        self.iris = TFLiteModel(model_path("iris_landmark.tflite", model_dir))
        self.mtcnn = None
        if use_mtcnn:
            from mtcnn import MTCNN  # noqa: PLC0415 - imports TensorFlow
            self.mtcnn = MTCNN()
        self.mtcnn_min_score = mtcnn_min_score
        self.blazeface_min_score = blazeface_min_score
        self.detect_max_side = detect_max_side
        self.detect_min_side = detect_min_side
        self.iris_passes = iris_passes
        self._lock = threading.Lock()

    # -- detection -------------------------------------------------------------------------

    def detect(self, image: np.ndarray) -> list:
        """Every face in ``image`` (uint8 RGB), merged over the detectors, largest first."""
        with self._lock:
            return self._detect(image)

    def _detect(self, image):
        h, w = image.shape[:2]
        longest = max(h, w)
        scale = 1.0
        if longest > self.detect_max_side:
            scale = self.detect_max_side / longest
        elif longest < self.detect_min_side:
            scale = self.detect_min_side / longest
        work = image
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            work = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC
                                                            if scale > 1 else
                                                            Image.Resampling.LANCZOS))
        sx, sy = work.shape[1] / w, work.shape[0] / h
        groups = []
        if self.mtcnn is not None:
            found = self.mtcnn.detect_faces(work, min_face_size=20)
            dets = []
            for f in found:
                if f["confidence"] < self.mtcnn_min_score:
                    continue
                x, y, bw, bh = f["box"]
                kp = f["keypoints"]
                k = {"eye_left": kp["left_eye"], "eye_right": kp["right_eye"],
                     "mtcnn_nose": kp["nose"], "mtcnn_mouth_left": kp["mouth_left"],
                     "mtcnn_mouth_right": kp["mouth_right"]}
                k = {n: np.asarray(v, np.float64) for n, v in k.items()}
                if k["eye_left"][0] > k["eye_right"][0]:
                    k["eye_left"], k["eye_right"] = k["eye_right"], k["eye_left"]
                dets.append(Detection((x, y, x + bw, y + bh), float(f["confidence"]), "mtcnn", k))
            groups.append(dets)
        groups.append(self.blaze_full.detect(work, self.blazeface_min_score))
        groups.append(self.blaze_short.detect(work, self.blazeface_min_score))
        faces = merge(groups)
        for f in faces:  # back to original pixel indices
            f.box = ((f.box[0] + 0.5) / sx - 0.5, (f.box[1] + 0.5) / sy - 0.5,
                     (f.box[2] + 0.5) / sx - 0.5, (f.box[3] + 0.5) / sy - 0.5)
            f.keypoints = {k: np.array([(v[0] + 0.5) / sx - 0.5, (v[1] + 0.5) / sy - 0.5])
                           for k, v in f.keypoints.items()}
        faces.sort(key=lambda f: -f.size)
        return faces

    # -- landmarks and pupils --------------------------------------------------------------

    def landmarks(self, image: np.ndarray, face: Detection) -> Landmarks:
        with self._lock:
            return self._landmarks(image, face)

    def _landmarks(self, image, face):
        eyes = np.array([face.keypoints["eye_left"], face.keypoints["eye_right"]], np.float64)
        iod = max(float(np.hypot(*(eyes[1] - eyes[0]))), 0.25 * face.size, 2.0)
        angle = math.atan2(*(eyes[1] - eyes[0])[::-1])
        # BlazeFace again, on an upright crop around the face: six consistent keypoints.
        down = np.array([-math.sin(angle), math.cos(angle)])
        centre = eyes.mean(axis=0) + 0.5 * iod * down
        n = 256
        m = patch_matrix(centre, 4.0 * iod, angle, n)
        crop = align.warp(image, m, n, fill=0)
        dets = self.blaze_short.detect_square(crop, 0.3)
        keypoints = {k: v for k, v in face.keypoints.items() if k.startswith("mtcnn_")}
        for k in BLAZEFACE_KEYPOINTS[2:]:  # the first detection's BlazeFace points, if any
            for name in (k, f"blazeface_short:{k}", f"blazeface_full:{k}"):
                if name in face.keypoints:
                    keypoints[k] = np.asarray(face.keypoints[name], np.float64)
                    break
        score = 0.0
        if dets:
            best = min(dets, key=lambda d: float(np.hypot(*(d.centre - (n - 1) / 2.0))))
            inv = align.invert(m)
            new = {k: align.apply(inv, v) for k, v in best.keypoints.items()}
            new_eyes = np.array([new["eye_left"], new["eye_right"]])
            # Trusted only when it agrees with the first detection's eyes (on hard crops it
            # can lock onto the brows).
            if float(np.abs(new_eyes - eyes).max()) < 0.25 * iod:
                keypoints.update(new)
                score = best.score
                eyes = new_eyes
        pupils, ok = self._pupils(image, eyes)
        # Verification: BlazeFace on the upright, pupil-aligned view must find its eyes near
        # the pupils. When it does not, its eyes (usually better in that normalised view)
        # are a second start for the iris model.
        err, seen = self._verify(image, pupils)
        if err > VERIFY_TOLERANCE and seen is not None:
            pupils2, ok2 = self._pupils(image, seen)
            err2, _ = self._verify(image, pupils2)
            if err2 < err:
                pupils, ok, err = pupils2, ok2, err2
        keypoints["eye_left"], keypoints["eye_right"] = eyes[0], eyes[1]
        return Landmarks(pupils, keypoints, score, ok, float(err))

    def _verify(self, image, pupils):
        """(error, eyes): how far (in inter-pupil distances) BlazeFace's eyes on the aligned
        view lie from the layout's pupils, and those eyes in source coordinates."""
        n = 256
        targets = align.pupil_targets(n)
        m = align.similarity_from_pupils(pupils, targets)
        view = align.warp(image, m, n, fill=0)
        dets = self.blaze_short.detect_square(view, 0.3)
        if not dets:
            return float("inf"), None
        best = min(dets, key=lambda d: float(np.abs(
            np.array([d.keypoints["eye_left"], d.keypoints["eye_right"]]) - targets).max()))
        eyes = np.array([best.keypoints["eye_left"], best.keypoints["eye_right"]])
        iod = float(targets[1, 0] - targets[0, 0])
        return float(np.abs(eyes - targets).max()) / iod, align.apply(align.invert(m), eyes)

    def _pupils(self, image, eyes):
        """Iris centres by the iris model, starting from the eye centres ``eyes``: the first
        pass on a wide crop (capture range), the next ones re-centred and tighter. Returns the
        pupils and whether both stayed within 0.3 inter-pupil distances of their start (an
        eye that did not is given its start point back, and the result is flagged)."""
        eyes = np.asarray(eyes, np.float64)
        start_iod = max(float(np.hypot(*(eyes[1] - eyes[0]))), 2.0)
        est = eyes.copy()
        sides = [1.6] + [1.1] * max(self.iris_passes - 1, 0)
        for side in sides:
            iod = max(float(np.hypot(*(est[1] - est[0]))), 2.0)
            angle = math.atan2(*(est[1] - est[0])[::-1])
            new = []
            for i in range(2):
                votes = []
                for flip in (False, True):
                    m = patch_matrix(est[i], side * iod, angle, 64, flip)
                    patch = uint8_to_unit_np(align.warp(image, m, 64, fill=0))
                    out = self.iris(patch)
                    iris = out["output_iris"].reshape(5, 3)[0, :2] - 0.5  # edge -> index
                    votes.append(align.apply(align.invert(m), iris))
                new.append(np.mean(votes, axis=0))
            est = np.array(new)
        moved = np.abs(est - eyes).max(axis=1)
        ok = moved < 0.3 * start_iod
        est[~ok] = eyes[~ok]
        return est, bool(ok.all())
