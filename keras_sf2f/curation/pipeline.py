"""The machine stage of HQ-VoxCeleb-style curation: filtering and image processing.

``curate(input_dir, output_dir, config)`` walks ``input_dir/<identity>/<image>``, and for each
image (in this order, the first failing check is the recorded reason):

1. reads it (any format PIL decodes; EXIF orientation applied; transparency on white) -
   ``unreadable`` otherwise;
2. detects faces (``detect.FaceAnalyzer``) - ``no_face`` / ``multiple_faces`` (faces smaller
   than ``min_relative_face_size`` of the largest are background people and do not count);
3. locates the pupils - ``pupils_too_close`` when they are less than ``min_interpupil_px``
   apart in the original image; ``landmarks_unreliable`` when the iris model drifted away
   from the detected eyes or the detector, run again on the aligned face, does not find the
   eyes on the pupils (``detect.VERIFY_TOLERANCE``) - better no image than a misaligned one;
4. checks the pose: the nose tip must lie on the pupils' perpendicular bisector, and the ear
   tragions symmetric about it (a head turned sideways moves the nose one way, the ears the
   other) - ``pose_not_frontal`` when |nose offset - ear offset / 2| exceeds
   ``max_pose_asymmetry`` inter-pupil distances (0.2 is about 17-20 degrees of yaw);
5. aligns the image (``align``: the pupils on the fixed layout) and classifies the expression
   (``expression``) - ``expression_not_neutral`` when some non-neutral emotion's probability
   exceeds ``max_non_neutral_score`` (1.0 switches the filter off);
6. writes the accepted image at every output size, as it is (``origin``) and with the
   background white (``masked``, ``segment``):
   ``<output_dir>/aligned/<size>/{origin,masked}/<identity>/<stem>.png``.

Every input image gets one manifest row (``manifest``) with decision, reason, detections,
landmarks, scores and output paths. A re-run skips images whose row matches the file (size,
mtime) and the settings; anything unexpected while processing one image is recorded as
``error`` and the run goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
import traceback
import warnings

import numpy as np
from PIL import Image, ImageOps

from keras_sf2f import files
from keras_sf2f.curation import align
# The settings are declared without the image libraries, for the tool's flags; they are part
# of this module's interface all the same.
from keras_sf2f.curation.config import CurationConfig
from keras_sf2f.curation.manifest import Manifest, now
from keras_sf2f.image_ranges import uint8_to_unit_np
from keras_sf2f.progress import Progress

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                    ".jfif", ".ppm", ".pgm")
KINDS = ("origin", "masked")
# Decoding limit: the largest images HQ-VoxCeleb's crawl met are ~6245x8093 (50 Mpx).
Image.MAX_IMAGE_PIXELS = 200_000_000


class UnreadableImage(Exception):
    pass


def load_image(path: str) -> np.ndarray:
    """uint8 RGB array of any image PIL decodes (first frame), EXIF-rotated, transparency
    composited on white. Raises UnreadableImage."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im)
                if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P"
                                                       and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    im = Image.alpha_composite(white, rgba)
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    arr = np.asarray(im, np.float64)
                    # Truncated, not image_ranges' rounding: curated faces are cached under
                    # PIPELINE_VERSION, and a rounding change would alter them silently.
                    im = Image.fromarray(np.clip(arr / max(arr.max(), 1) * 255, 0, 255)
                                         .astype(np.uint8))
                rgb = np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises many kinds for corrupt / unsupported files
        raise UnreadableImage(f"{type(e).__name__}: {e}") from e
    if rgb.ndim != 3 or rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise UnreadableImage(f"degenerate image of shape {rgb.shape}")
    return np.ascontiguousarray(rgb)


def output_stem(filename: str) -> str:
    """'00012.jpg' -> '00012_jpg' (unique per identity even for a.jpg next to a.png)."""
    return filename.replace(".", "_")


def output_relpath(size: int, kind: str, identity: str, filename: str) -> str:
    return os.path.join("aligned", str(size), kind, identity, output_stem(filename) + ".png")


def _save_png(path: str, image: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with files.atomic_write(path, "wb") as f:
        Image.fromarray(image).save(f, format="PNG")


def _r(v, nd=4):
    return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else round(
        float(v), nd)


class Curator:
    """Holds the models; ``process`` decides on one image and writes its outputs."""

    def __init__(self, config: CurationConfig = CurationConfig()):
        from keras_sf2f.curation.detect import FaceAnalyzer  # noqa: PLC0415
        from keras_sf2f.curation.expression import ExpressionClassifier  # noqa: PLC0415
        from keras_sf2f.curation.segment import Segmenter  # noqa: PLC0415
        self.config = config.validate()
        self.analyzer = FaceAnalyzer(config.model_dir, mtcnn_min_score=config.mtcnn_min_score,
                                     blazeface_min_score=config.blazeface_min_score)
        self.expression = ExpressionClassifier(config.model_dir)
        self.segmenter = Segmenter(config.model_dir)

    def analyse(self, image: np.ndarray) -> dict:
        """The decision for one decoded image, without writing anything: a dict with
        status, reason, detail, faces, landmarks, scores and (accepted only) ``images``:
        {(size, kind): uint8 array}."""
        cfg = self.config
        h, w = image.shape[:2]
        out = {"width": int(w), "height": int(h), "faces": [], "landmarks": None,
               "scores": {}}
        faces = self.analyzer.detect(image)
        out["faces"] = [f.to_json() for f in faces]
        counted = [f for f in faces if f.size >= cfg.min_relative_face_size * faces[0].size]
        out["scores"]["faces_detected"] = len(faces)
        out["scores"]["faces_counted"] = len(counted)
        if not counted:
            return dict(out, status="rejected", reason="no_face", detail="no face detected")
        if len(counted) > 1:
            return dict(out, status="rejected", reason="multiple_faces",
                        detail=f"{len(counted)} faces (of {len(faces)} detected)")
        face = counted[0]
        lm = self.analyzer.landmarks(image, face)
        pose = lm.pose()
        iod = lm.interpupil_distance
        out["landmarks"] = {
            "pupil_left": [_r(v, 2) for v in lm.pupils[0]],
            "pupil_right": [_r(v, 2) for v in lm.pupils[1]],
            "iris_refined": lm.iris_ok, "verify_error": _r(lm.verify_error),
            **{k: [_r(v[0], 2), _r(v[1], 2)] for k, v in lm.keypoints.items()}}
        out["scores"].update({"face_score": _r(face.score), "face_source": face.source,
                              "landmark_score": _r(lm.landmark_score),
                              "interpupil_px": _r(iod, 2),
                              **{f"pose_{k}": _r(v) for k, v in pose.items()}})
        if iod < cfg.min_interpupil_px:
            return dict(out, status="rejected", reason="pupils_too_close",
                        detail=f"pupils {iod:.1f} px apart (minimum {cfg.min_interpupil_px:g})")
        if not lm.reliable:
            return dict(out, status="rejected", reason="landmarks_unreliable",
                        detail=("the iris model drifted away from the detected eyes"
                                if not lm.iris_ok else
                                f"the detector's eyes on the aligned face are "
                                f"{lm.verify_error:.2f} inter-pupil distances from the pupils"))
        asym = pose.get("asymmetry", float("nan"))
        if np.isfinite(asym) and asym > cfg.max_pose_asymmetry:
            return dict(out, status="rejected", reason="pose_not_frontal",
                        detail=f"nose and ears off the face's midline by {asym:.2f} inter-pupil "
                               f"distances (maximum {cfg.max_pose_asymmetry:g})")
        # Alignment (every size warped from the original, not resized from another size).
        sizes = sorted({int(s) for s in cfg.output_sizes})
        aligned, matrices = {}, {}
        for size in sizes:
            aligned[size], matrices[size] = align.align_to_layout(image, lm.pupils, size)
        ref = 224 if 224 in aligned else sizes[-1]
        out["scores"]["rotation_degrees"] = _r(align.rotation_degrees(matrices[ref]), 3)
        out["scores"]["scale"] = _r(float(np.sqrt(abs(np.linalg.det(matrices[ref][:, :2])))))
        probs = self.expression.probabilities(aligned[ref])
        non_neutral = max((v, k) for k, v in probs.items() if k != "neutral")
        out["scores"]["expression"] = {k: _r(v) for k, v in probs.items()}
        out["scores"]["expression_top"] = max(probs, key=probs.get)
        out["scores"]["non_neutral_score"] = _r(non_neutral[0])
        if non_neutral[0] > cfg.max_non_neutral_score:
            return dict(out, status="rejected", reason="expression_not_neutral",
                        detail=f"{non_neutral[1]} {non_neutral[0]:.2f} > "
                               f"{cfg.max_non_neutral_score:g} (neutral {probs['neutral']:.2f})")
        # Segmentation on a 256 px warp of the same layout; pixels from outside the source
        # are background.
        from keras_sf2f.curation import segment  # noqa: PLC0415
        n = segment.SEGMENTATION_SIZE
        seg_in, _ = align.align_to_layout(image, lm.pupils, n)
        inside, _ = align.align_to_layout(np.full((h, w), 255, np.uint8), lm.pupils, n, fill=0,
                                          resample=Image.Resampling.BILINEAR)
        raw = self.segmenter.person_probability(seg_in)
        prob = segment.refine(seg_in, raw, uint8_to_unit_np(inside))
        out["scores"]["person_fraction_network"] = _r(float((raw > 0.5).mean()))
        out["scores"]["person_fraction"] = _r(float((prob > 0.5).mean()))
        images = {}
        for size in sizes:
            p = prob if size == n else self._resize_prob(prob, size)
            alpha = self._alpha(p)
            images[size, "origin"] = aligned[size]
            images[size, "masked"] = self._whiten(aligned[size], alpha)
        return dict(out, status="accepted", reason=None, detail="", images=images)

    def _resize_prob(self, prob, size):
        from keras_sf2f.curation.segment import resize_mask  # noqa: PLC0415
        return resize_mask(prob, size, size)

    def _alpha(self, prob):
        from keras_sf2f.curation.segment import alpha_from_probability  # noqa: PLC0415
        return alpha_from_probability(prob, self.config.mask_low, self.config.mask_high)

    @staticmethod
    def _whiten(image, alpha):
        from keras_sf2f.curation.segment import whiten_background  # noqa: PLC0415
        return whiten_background(image, alpha)

    def process(self, path: str, identity: str, output_dir: str) -> dict:
        """Decides on one file, writes its outputs (accepted only) and returns its manifest
        record (not yet stored)."""
        filename = os.path.basename(path)
        t0 = time.monotonic()
        st = os.stat(path)
        record = {"key": f"{identity}/{filename}", "identity": identity, "filename": filename,
                  "source": os.path.abspath(path), "file_size": st.st_size,
                  "file_mtime_ns": st.st_mtime_ns, "settings": self.config.fingerprint(),
                  "outputs": {}, "faces": [], "landmarks": None, "scores": {}}
        try:
            image = load_image(path)
        except UnreadableImage as e:
            record.update(status="error", reason="unreadable", detail=str(e)[:500])
        else:
            try:
                result = self.analyse(image)
            except Exception as e:  # recorded, never fatal for the run
                record.update(status="error", reason="error",
                              detail=f"{type(e).__name__}: {e}\n"
                                     f"{traceback.format_exc(limit=4)}"[:2000],
                              width=int(image.shape[1]), height=int(image.shape[0]))
            else:
                images = result.pop("images", {})
                for (size, kind), arr in sorted(images.items()):
                    rel = output_relpath(size, kind, identity, filename)
                    _save_png(os.path.join(output_dir, rel), arr)
                    record["outputs"][f"{kind}_{size}"] = rel
                record.update(result)
        record["processed_at"] = now()
        record["seconds"] = round(time.monotonic() - t0, 3)
        return record


def list_inputs(input_dir: str) -> tuple:
    """([(identity, path)], [ignored paths]) for ``input_dir/<identity>/<image>``, sorted.
    Files below an identity folder's sub-folders count for that identity."""
    if not os.path.isdir(input_dir):
        raise FileNotFoundError(f"{input_dir}: not a directory")
    items, ignored = [], []
    for identity in sorted(os.listdir(input_dir)):
        folder = os.path.join(input_dir, identity)
        if not os.path.isdir(folder):
            ignored.append(folder)
            continue
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if name.startswith("."):
                    continue
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    items.append((identity, path))
                else:
                    ignored.append(path)
    return items, ignored


def _shard_of(identity: str, num_shards: int) -> int:
    return int(hashlib.sha1(identity.encode()).hexdigest(), 16) % num_shards


def curate(input_dir: str, output_dir: str, config: CurationConfig = CurationConfig(), *,
           curator: Curator | None = None, num_shards: int = 1, shard_index: int = 0,
           log=print, progress_interval: float = 5.0, contact_sheet: bool = True) -> dict:
    """Runs the machine stage; returns the manifest counts plus ``processed``/``skipped``.

    ``num_shards``/``shard_index`` split the identities between processes that share one
    output directory (each takes the identities whose name hashes to its index).
    """
    config.validate()
    items, ignored = list_inputs(input_dir)
    if num_shards > 1:
        items = [(i, p) for i, p in items if _shard_of(i, num_shards) == shard_index]
    for path in ignored[:10]:
        log(f"ignored (not an image file in an identity folder): {path}")
    if len(ignored) > 10:
        log(f"... and {len(ignored) - 10} more ignored files")
    with Manifest(output_dir) as manifest:
        manifest.set_meta("settings", {"fingerprint": config.fingerprint(),
                                       **{k: (list(v) if isinstance(v, tuple) else v)
                                          for k, v in dataclasses.asdict(config).items()}})
        manifest.set_meta("input_dir", os.path.abspath(input_dir))
        stamps = manifest.stamps()
        fp = config.fingerprint()
        todo = []
        for identity, path in items:
            key = f"{identity}/{os.path.basename(path)}"
            st = os.stat(path)
            if stamps.get(key) == (st.st_size, st.st_mtime_ns, fp):
                continue
            todo.append((identity, path))
        skipped = len(items) - len(todo)
        log(f"{len(items)} input images in {len({i for i, _ in items})} identity folders: "
            f"{skipped} already done, {len(todo)} to process")
        stats = {"accepted": 0, "rejected": 0, "error": 0}
        if todo and curator is None:
            curator = Curator(config)
        progress = Progress(len(todo), "curating", unit="images", interval=progress_interval,
                            write=log)
        for identity, path in todo:
            record = curator.process(path, identity, output_dir)
            manifest.put(record)
            stats[record["status"]] += 1
            progress.update(extra=f"accepted {stats['accepted']}, rejected {stats['rejected']}"
                                  f", errors {stats['error']}")
        counts = manifest.counts()
        counts.update(processed=len(todo), skipped=skipped)
        manifest.export_jsonl(os.path.join(output_dir, "manifest.jsonl"))
        if contact_sheet:
            sheet = write_contact_sheet(manifest, output_dir)
            if sheet:
                counts["contact_sheet"] = sheet
    return counts


def write_contact_sheet(manifest: Manifest, output_dir: str, *, size: int = 128,
                        limit: int = 64) -> str | None:
    """``<output_dir>/contact_sheet.png``: accepted masked faces (label identity/file) and,
    after them, thumbnails of rejected inputs labelled with their reason."""
    from keras_sf2f.data.corpus.sheets import write_contact_sheet as sheet  # noqa: PLC0415
    images, labels = [], []
    for r in manifest.records(status="accepted"):
        rel = r["outputs"].get(f"masked_{size}") or next(iter(r["outputs"].values()), None)
        if rel and len(images) < limit:
            with Image.open(os.path.join(output_dir, rel)) as im:
                images.append(np.asarray(im.convert("RGB").resize((size, size))))
            labels.append(f"{r['identity']}/{r['filename']}"[:24])
    for r in manifest.records():
        if r["status"] == "accepted" or len(images) >= limit + limit // 2:
            continue
        try:
            thumb = load_image(r["source"])
        except (UnreadableImage, OSError):
            thumb = np.full((size, size, 3), 200, np.uint8)
        pil = Image.fromarray(thumb)
        pil.thumbnail((size, size))
        images.append(np.asarray(pil))
        labels.append(f"x {r['reason']}"[:24])
    if not images:
        return None
    path = os.path.join(output_dir, "contact_sheet.png")
    sheet(path, images, labels, columns=8)
    return path
