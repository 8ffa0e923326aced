"""Background replacement: the person (face, hair, neck, shoulders) is kept, the rest becomes
white.

The SF2F authors segment with PSPNet trained on Pascal VOC (class "person"); no such model
ships in a package. MediaPipe's selfie segmentation model does (``selfie_segmentation.tflite``
from the mediapipe 0.10.21 wheel, Apache-2.0, 250 kB): a person-vs-background network for
head-and-shoulders views at 256x256, which is exactly what an aligned face crop is. It runs
in ``tf.lite.Interpreter`` with stock ops. Input RGB in [0, 1]; output the person
probability per pixel.

The mask is computed once per image on a 256 px warp of the aligned layout and resampled to
each output size. The network's probability is then refined (``refine``), because on its own
it is erratic where it is uncertain (measured on the corpus's drawn faces pasted on photos:
between 17 % and 99 % of the background whitened): the aligned layout says where the face
core is (surely person) and which regions lie far outside any head and shoulders (the
corners beside and above the head: always background); colour histograms of the confident person and background pixels give
each pixel a colour likelihood ratio; network logit + colour log-ratio + layout prior are
summed, lightly smoothed, and only the regions connected to the face core are kept, holes
filled (a small GrabCut without the graph cut). Pixels below ``low`` are set to exactly 255; pixels above ``high`` keep
their colour; in between they are blended (a soft, anti-aliased edge). Pixels that came from
outside the source image count as background.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from keras_sf2f.curation import align

from keras_sf2f.curation.models import TFLiteModel, model_path
from keras_sf2f.image_ranges import uint8_to_unit_np

SEGMENTATION_SIZE = 256
_BINS = 12  # colour histogram levels per channel


class Segmenter:
    def __init__(self, model_dir: str | None = None):
        self.model = TFLiteModel(model_path("selfie_segmentation.tflite", model_dir))
        n = self.model.input_shape[0]
        if self.model.input_shape != (n, n, 3):
            raise ValueError(f"unexpected segmentation input {self.model.input_shape}")
        self.n = n

    def person_probability(self, image: np.ndarray) -> np.ndarray:
        """Person probability [H, W] (float32 in [0, 1]) of a square uint8 RGB image."""
        h, w = image.shape[:2]
        x = image if (h, w) == (self.n, self.n) else np.asarray(
            Image.fromarray(image).resize((self.n, self.n), Image.Resampling.BILINEAR))
        out = next(iter(self.model(uint8_to_unit_np(x)).values()))
        prob = np.clip(out[..., 0], 0.0, 1.0).astype(np.float32)
        if (h, w) != (self.n, self.n):
            prob = resize_mask(prob, w, h)
        return prob


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(np.asarray(mask, np.float32), mode="F").resize(
        (width, height), Image.Resampling.BILINEAR), np.float32)


def alpha_from_probability(prob: np.ndarray, low: float = 0.3, high: float = 0.7) -> np.ndarray:
    return np.clip((np.asarray(prob, np.float32) - low) / max(high - low, 1e-6), 0.0, 1.0)


def whiten_background(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``image`` (uint8 RGB) with its background (alpha 0) exactly white, blended by alpha."""
    a = np.asarray(alpha, np.float32)[..., None]
    out = np.asarray(image, np.float32) * a + 255.0 * (1.0 - a)
    # np.round (half to even), not image_ranges' half-up rule: curated faces are cached under
    # PIPELINE_VERSION, and a rounding change would alter them without a version change.
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    out[np.asarray(alpha) <= 0] = 255
    return out


def layout_regions(size: int):
    """(core, far) boolean masks of the aligned layout at ``size`` px: the face core (eyes to
    below the mouth, cheek to cheek: always the person) and the regions far outside any head
    and shoulders (beside and above the head, above the shoulder line)."""
    t = align.pupil_targets(size)
    iod = float(t[1, 0] - t[0, 0])
    mid = t.mean(axis=0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)

    def ellipse(cy, ax, ay):
        return ((xx - mid[0]) / ax) ** 2 + ((yy - (mid[1] + cy)) / ay) ** 2 <= 1.0

    core = ellipse(0.45 * iod, 0.8 * iod, 0.95 * iod)
    head = ellipse(0.3 * iod, 2.0 * iod, 2.4 * iod)
    far = ~head & (yy < mid[1] + 1.9 * iod)
    return core, far


def refine(image: np.ndarray, prob: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
    """Refined person probability of an aligned square image (see the module doc)."""
    size = image.shape[0]
    prob = np.clip(np.asarray(prob, np.float64), 1e-3, 1 - 1e-3)
    inside = np.ones(prob.shape, bool) if inside is None else np.asarray(inside) > 0.5
    core, far = layout_regions(size)
    prior = np.where(core, 8.0, np.where(far, -8.0, 0.0))
    q = (np.asarray(image, np.int64) * _BINS) // 256
    idx = (q[..., 0] * _BINS + q[..., 1]) * _BINS + q[..., 2]
    fg = (core | ((prob > 0.8) & ~far)) & inside
    bg = (((prob < 0.2) & ~core) | (far & (prob < 0.9))) & inside
    llr = np.zeros(prob.shape)
    if fg.sum() >= 50 and bg.sum() >= 50:
        n = _BINS ** 3
        hf = np.bincount(idx[fg], minlength=n) + 0.5
        hb = np.bincount(idx[bg], minlength=n) + 0.5
        hf = ndimage.uniform_filter(hf.reshape(_BINS, _BINS, _BINS), 3).ravel()
        hb = ndimage.uniform_filter(hb.reshape(_BINS, _BINS, _BINS), 3).ravel()
        llr = np.clip(np.log(hf / hf.sum()) - np.log(hb / hb.sum()), -4.0, 4.0)[idx]
    logit = np.log(prob / (1 - prob)) + llr + prior
    logit = ndimage.gaussian_filter(logit, 1.0)
    logit[~inside | far] = -20.0  # outside the source, or far from any head: background
    out = 1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))
    lab, _ = ndimage.label(out > 0.5)
    keep = np.isin(lab, np.unique(lab[core & (lab > 0)])) | core
    keep = ndimage.binary_fill_holes(keep) & inside
    # Soft edge only next to what is kept; everything else is background.
    near = ndimage.binary_dilation(keep, iterations=2)
    return np.where(keep, np.maximum(out, 0.5), np.where(near, np.minimum(out, 0.5), 0.0)
                    ).astype(np.float32)
