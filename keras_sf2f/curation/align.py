"""Pupil layouts and the similarity warp that puts both pupils on them.

Coordinates are numpy pixel indices everywhere (x = column, y = row; the centre of pixel
(r, c) is (c, r)), as in ``keras_sf2f.data.corpus.face``.

Layout. One layout in proportion to the image side, defined once from the procedural
corpus's aligned faces (``EYE_LEFT_128 = (49, 58)``, ``EYE_RIGHT_128 = (79, 58)``): the
pupils sit at edge coordinates (49.5/128, 58.5/128) and (79.5/128, 58.5/128) of the side, i.e.
an inter-pupil distance of 30/128 = 23.4 % of the side with the eye line at 45.7 % from the
top. At 64 px that is (24.25, 28.75) / (39.25, 28.75), at 128 px (49, 58) / (79, 58), at
224 px (86.125, 101.875) / (138.625, 101.875), an inter-pupil distance of 52.5 px.
Why the same proportions at 224: HQ-VoxCeleb publishes no landmark template, and the
preparation step (``keras_sf2f.data.prepare``) resizes every curated image to 64 and 128 px
with PIL; a proportional 224 layout therefore lands the pupils exactly on the 64/128 targets
the rest of the project (corpus, decoders) uses, while the face, hair and shoulders stay in
frame as in HQ-VoxCeleb's head-and-shoulders crops.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from keras_sf2f.curation.config import OUTPUT_SIZES
from keras_sf2f.data.corpus.face import EYE_LEFT_128, EYE_RIGHT_128


def pupil_targets(size: int) -> np.ndarray:
    """Target pupil centres at ``size`` px: [[x_left, y_left], [x_right, y_right]] (image
    left first), pixel indices."""
    k = size / 128.0
    return np.array([[(EYE_LEFT_128[0] + 0.5) * k - 0.5, (EYE_LEFT_128[1] + 0.5) * k - 0.5],
                     [(EYE_RIGHT_128[0] + 0.5) * k - 0.5, (EYE_RIGHT_128[1] + 0.5) * k - 0.5]])


# The layouts, once, by size (the "64, 128 and 224").
PUPIL_TARGETS = {size: pupil_targets(size) for size in OUTPUT_SIZES}


def similarity_from_pupils(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation) mapping the two points
    ``src`` exactly onto ``dst`` (both [[x, y], [x, y]], left then right)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    vs, vd = src[1] - src[0], dst[1] - dst[0]
    if np.hypot(*vs) < 1e-9:
        raise ValueError("the two source points coincide")
    zs, zd = complex(*vs), complex(*vd)
    z = zd / zs  # scale * e^{i angle}
    a, b = z.real, z.imag
    m = np.array([[a, -b], [b, a]])
    t = dst[0] - m @ src[0]
    return np.concatenate([m, t[:, None]], axis=1)


def apply(matrix: np.ndarray, points) -> np.ndarray:
    p = np.asarray(points, np.float64)
    return p @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    m = np.linalg.inv(matrix[:, :2])
    return np.concatenate([m, (-m @ matrix[:, 2])[:, None]], axis=1)


def rotation_degrees(matrix: np.ndarray) -> float:
    """The in-plane rotation the warp applies (positive = counter-clockwise on screen)."""
    return float(np.degrees(np.arctan2(-matrix[1, 0], matrix[0, 0])))


def warp(image: np.ndarray, matrix: np.ndarray, size: int, *, fill=255,
         resample=Image.Resampling.BICUBIC) -> np.ndarray:
    """``image`` (uint8 HxW or HxWxC) seen through ``matrix`` (source -> output pixel
    indices) as a ``size`` x ``size`` image. Pixels that come from outside the source get
    ``fill``. Large reductions are pre-filtered (PIL ``reduce``) so that the warp itself never
    shrinks by more than 2x, which keeps it free of aliasing."""
    image = np.asarray(image)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    factor = int(np.floor(0.5 / scale)) if scale < 0.5 else 1
    pil = Image.fromarray(image)
    if factor > 1:
        pil = pil.reduce(factor)  # box filter; pixel centre i -> (i + 0.5) / factor - 0.5
        pre = np.array([[factor, 0.0, 0.5 * factor - 0.5], [0.0, factor, 0.5 * factor - 0.5]])
        # reduced index j covers source indices j*f .. j*f+f-1: source = f*j + (f-1)/2
        matrix = np.concatenate([matrix[:, :2] @ pre[:, :2], (matrix[:, :2] @ pre[:, 2]
                                                              + matrix[:, 2])[:, None]], 1)
    inv = invert(matrix)  # output index -> source index
    # PIL's AFFINE maps output edge coordinates (index + 0.5) to input edge coordinates.
    a, b, c = inv[0]
    d, e, f = inv[1]
    data = (a, b, c + 0.5 - 0.5 * (a + b), d, e, f + 0.5 - 0.5 * (d + e))
    if pil.mode == "L":
        fillcolor = int(fill if np.isscalar(fill) else fill[0])
    else:
        fillcolor = tuple([int(fill)] * len(pil.getbands())) if np.isscalar(fill) else tuple(fill)
    out = pil.transform((size, size), Image.Transform.AFFINE, data, resample=resample,
                        fillcolor=fillcolor)
    return np.asarray(out).copy()


def align_to_layout(image: np.ndarray, pupils: np.ndarray, size: int, **kw):
    """``(aligned image, matrix)``: ``image`` warped so that ``pupils`` (image left first)
    land on ``PUPIL_TARGETS[size]``."""
    matrix = similarity_from_pupils(pupils, pupil_targets(size))
    return warp(image, matrix, size, **kw), matrix
