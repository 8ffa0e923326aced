"""Face drawing for the procedural voice-face corpus.

Cartoon portraits, deterministic from ``(seed, identity, item)``, drawn with PIL at twice the
output size and box-downsampled (2x2 supersampling, i.e. antialiased) to 64 or 128 px.

Geometry. Every shape is a polygon in *face units*: pixels of the 128 px canonical frame,
origin at the midpoint between the eyes, eyes at u = -15 and u = +15, with a depth z per
shape (outline 0, eyes 20, nose tip 32, ...). A head turn (yaw) projects x = u cos(yaw) +
z sin(yaw), so features slide sideways over the outline and squash. The projected points go
through, for ``quality='aligned'``, a similarity transform that puts the projected eyes back
at their canonical places (as an eye-based face aligner would), then a small per-image
jitter (rotation, scale, shift); for ``quality='in_the_wild'``, no alignment and a large
jitter. Because every point follows the same transform, ``pupil_positions`` knows exactly
where the pupils of any drawn image are.

Appearance from the identity's attributes (``attributes.py``): a skull ellipse whose lower
half is a superellipse (squarer jaw for male-like identities, a tapered chin for female-like
ones), width from weight and size; skin colour from the accent factor; hair length, beard and
brow thickness from the gender factor; grey hair, receding hair, wrinkles and eye bags from
age; eye colour, eye spacing (faces are aligned on the eyes, so wider-set eyes make the head
look smaller), clothes colour, hair volume and nose width independent of the voice. Per
image: jitter, a lighting gradient, smile, gaze and brow raise; in the wild also head yaw, a
coloured, textured background, colour cast, blur, noise and JPEG artefacts.

Coordinates returned by this module are numpy pixel indices (x = column, y = row, the centre
of pixel (r, c) is (c, r)). The 2x canvas and PIL's polygon convention (a vertex at (x, y)
fills pixels whose centres are at (x - 0.5, y - 0.5)) are folded into one linear map: canvas
coordinate = 2 * (output index + 0.5).
"""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
from PIL import Image, ImageDraw

from keras_sf2f.data.corpus.attributes import (STREAM_FACE, IdentityAttributes,
                                               identity_attributes, rng_for)

# Stream for identity-level drawing style (collar, parting, fringe), separate from the
# per-image stream STREAM_FACE (items) and from the attributes.
STREAM_FACE_STYLE = 0x5F2F_F57E

EYE_LEFT_128 = (49.0, 58.0)   # (x, y) pixel index of the image-left eye centre at 128 px
EYE_RIGHT_128 = (79.0, 58.0)  # (x, y) pixel index of the image-right eye centre at 128 px
QUALITIES = ("aligned", "in_the_wild")
SIZES = (64, 128)

_HALF_IOD = 15.0                      # half the inter-ocular distance in face units
_ORIGIN_EDGE = (64.5, 58.5)           # eye midpoint in 128-frame edge coordinates
_Z_EYE, _Z_BROW, _Z_NOSE, _Z_MOUTH = 20.0, 22.0, 32.0, 24.0


def aligned_eye_positions(size: int) -> np.ndarray:
    """Canonical eye centres (pixel indices) at ``size`` px: [[x_left, y], [x_right, y]]."""
    k = size / 128.0
    return np.array([[(EYE_LEFT_128[0] + 0.5) * k - 0.5, (EYE_LEFT_128[1] + 0.5) * k - 0.5],
                     [(EYE_RIGHT_128[0] + 0.5) * k - 0.5, (EYE_RIGHT_128[1] + 0.5) * k - 0.5]])


@dataclasses.dataclass(frozen=True)
class _ImageParams:
    quality: str
    yaw: float         # radians, positive turns the face to the image right
    rotation: float    # radians, in-plane
    scale: float
    shift: tuple       # (dx, dy) in 128-frame pixels
    smile: float       # -0.2 (slight frown) .. 1 (broad smile)
    gaze: tuple        # iris offset (du, dv) in face units
    brow_raise: float  # face units
    light_angle: float
    light_strength: float
    brightness: float


def _check(size: int, quality: str) -> None:
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size}")
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")


def _image_params(rng: np.random.Generator, quality: str) -> _ImageParams:
    """Per-image parameters; drawn first from the image's stream, in a fixed order."""
    smile = float(rng.uniform(-0.2, 1.0))
    gaze = (float(rng.uniform(-1.1, 1.1)), float(rng.uniform(-0.4, 0.4)))
    brow_raise = float(rng.uniform(-0.8, 1.5))
    light_angle = float(rng.uniform(0, 2 * math.pi))
    if quality == "aligned":
        yaw = math.radians(float(np.clip(rng.normal(0.0, 4.0), -8.0, 8.0)))
        rotation = math.radians(float(np.clip(rng.normal(0.0, 1.2), -3.0, 3.0)))
        scale = float(math.exp(np.clip(rng.normal(0.0, 0.02), -0.05, 0.05)))
        shift = tuple(float(v) for v in np.clip(rng.normal(0.0, 0.7, 2), -2.0, 2.0))
        light_strength = float(rng.uniform(0.0, 0.12))
        brightness = float(rng.uniform(0.96, 1.04))
    else:
        yaw = math.radians(float(rng.uniform(-25.0, 25.0)))
        rotation = math.radians(float(rng.uniform(-15.0, 15.0)))
        scale = float(math.exp(rng.uniform(math.log(0.7), math.log(1.15))))
        shift = tuple(float(v) for v in rng.uniform(-12.0, 12.0, 2))
        light_strength = float(rng.uniform(0.05, 0.3))
        brightness = float(rng.uniform(0.8, 1.15))
    return _ImageParams(quality, yaw, rotation, scale, shift, smile, gaze, brow_raise,
                        light_angle, light_strength, brightness)


class _Transform:
    """Face units (u, v, z) -> 128-frame edge coordinates (x + 0.5, y + 0.5)."""

    def __init__(self, p: _ImageParams):
        self.cy, self.sy = math.cos(p.yaw), math.sin(p.yaw)
        if p.quality == "aligned":
            # Eye-based alignment of the projected face: undo the yaw's shift and squash of
            # the eye pair, so that the eyes land on their canonical places.
            self.offset, self.norm = _Z_EYE * self.sy, 1.0 / self.cy
        else:
            self.offset, self.norm = 0.0, 1.0
        c, s = math.cos(p.rotation) * p.scale, math.sin(p.rotation) * p.scale
        self.m = np.array([[c, -s], [s, c]])
        self.t = np.array([_ORIGIN_EDGE[0] + p.shift[0], _ORIGIN_EDGE[1] + p.shift[1]])
        self.linear_scale = p.scale * self.norm

    def __call__(self, u, v, z) -> np.ndarray:
        u = np.asarray(u, np.float64)
        v = np.asarray(v, np.float64)
        x = (u * self.cy + z * self.sy - self.offset) * self.norm
        y = v * self.norm
        x, y = np.broadcast_arrays(x, y)
        m, t = self.m, self.t
        return np.stack([m[0, 0] * x + m[0, 1] * y + t[0], m[1, 0] * x + m[1, 1] * y + t[1]],
                        axis=-1)


def _identity_style(seed: int, identity: int) -> dict:
    rng = rng_for(seed, identity, 0, STREAM_FACE_STYLE)
    return {
        "collar": int(rng.integers(3)),          # 0 crew neck, 1 V neck, 2 shirt collar
        "parting": float(rng.uniform(-1, 1)),    # hair parting side
        "fringe": float(rng.random()),           # > 0.5: straight fringe (long hair)
        "blush": float(rng.uniform(0.0, 1.0)),
        "lip_tint": float(rng.uniform(0.0, 1.0)),
    }


def _skin_rgb(tone: float) -> np.ndarray:
    stops = np.array([(248, 218, 196), (236, 194, 160), (205, 152, 112), (156, 104, 70),
                      (98, 64, 44)], np.float64)
    x = np.linspace(0.0, 1.0, len(stops))
    return np.array([np.interp(tone, x, stops[:, c]) for c in range(3)])


def _mix(a, b, t):
    return np.asarray(a, np.float64) * (1.0 - t) + np.asarray(b, np.float64) * t


def _byte(v) -> int:
    return min(255, max(0, int(round(float(v)))))


def _rgb(c, alpha=None):
    c = tuple(_byte(v) for v in c)
    return c if alpha is None else c + (_byte(alpha),)


def _ellipse(cu, cv, ru, rv, n=40):
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    return cu + ru * np.cos(t), cv + rv * np.sin(t)


class _Painter:
    def __init__(self, size: int, xform: _Transform, bg=(255, 255, 255)):
        self.k = 2.0 * size / 128.0
        self.canvas = Image.new("RGB", (2 * size, 2 * size), bg)
        self.mask = Image.new("L", (2 * size, 2 * size), 0)
        self.draw = ImageDraw.Draw(self.canvas, "RGBA")
        self.mdraw = ImageDraw.Draw(self.mask)
        self.xform = xform

    def _pts(self, u, v, z):
        p = self.xform(u, v, z) * self.k
        return [tuple(q) for q in p.tolist()]

    def poly(self, u, v, z, colour, alpha=None, silhouette=False):
        pts = self._pts(u, v, z)
        self.draw.polygon(pts, fill=_rgb(colour, alpha))
        if silhouette:
            self.mdraw.polygon(pts, fill=255)

    def line(self, u, v, z, colour, width, alpha=None):
        w = max(1, int(round(width * self.k * self.xform.linear_scale)))
        self.draw.line(self._pts(u, v, z), fill=_rgb(colour, alpha), width=w, joint="curve")


@dataclasses.dataclass
class _Head:
    """Head outline in face units: centre (0, cy); upper half an ellipse, lower a superellipse."""
    a_up: float
    a_lo: float
    b_up: float
    b_lo: float
    cy: float
    n_jaw: float
    taper: float

    def outline(self, n=72):
        t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
        c, s = np.cos(t), np.sin(t)
        lower = s > 0
        e = np.where(lower, 2.0 / self.n_jaw, 1.0)
        u = np.sign(c) * np.abs(c) ** e * np.where(lower, self.a_lo, self.a_up)
        vv = np.abs(s) ** e
        u = u * np.where(lower, 1.0 - self.taper * vv ** 3, 1.0)
        v = self.cy + np.sign(s) * vv * np.where(lower, self.b_lo, self.b_up)
        return u, v

    def half_width(self, v):
        v = np.asarray(v, np.float64)
        up = np.clip((self.cy - v) / self.b_up, 0.0, 1.0)
        lo = np.clip((v - self.cy) / self.b_lo, 0.0, 1.0)
        w_up = self.a_up * np.sqrt(1.0 - up ** 2)
        w_lo = (self.a_lo * (1.0 - lo ** self.n_jaw) ** (1.0 / self.n_jaw)
                * (1.0 - self.taper * lo ** 3))
        return np.where(v < self.cy, w_up, w_lo)


def _layout(seed: int, identity: int, item: int, quality: str,
            attributes: IdentityAttributes | None = None):
    attrs = identity_attributes(seed, identity) if attributes is None else attributes
    rng = rng_for(seed, identity, item, STREAM_FACE)
    params = _image_params(rng, quality)
    return attrs, rng, params, _Transform(params)


def pupil_positions(seed: int, identity: int, item: int, size: int = 128,
                    quality: str = "aligned") -> np.ndarray:
    """Pupil centres of the image ``draw_face`` makes for these arguments, as pixel indices
    ``[[x_left, y_left], [x_right, y_right]]`` (float64; left = image left)."""
    _check(size, quality)
    attrs, _, params, xform = _layout(seed, identity, item, quality)
    return _pupils(attrs, params, xform, size)


def _pupils(attrs, params, xform, size):
    u = np.array([-_HALF_IOD, _HALF_IOD]) + params.gaze[0] * _eye_scale(attrs)
    v = np.full(2, params.gaze[1] * _eye_scale(attrs))
    return xform(u, v, _Z_EYE) * (size / 128.0) - 0.5


def _eye_scale(attrs: IdentityAttributes) -> float:
    """Face-unit scale of everything except the eye positions: wider-set eyes (in absolute
    terms) make the rest of the face smaller once the eyes are aligned."""
    return 1.0 / (1.0 + 0.1 * attrs.eye_spacing)


def _background(rng, size2):
    """A coloured, textured in-the-wild background (RGB float array [size2, size2, 3]),
    made at half resolution (the image noise comes later, at output resolution)."""
    out = size2
    size2 = size2 // 2
    base = _mix(rng.uniform(20, 240, 3), np.full(3, rng.uniform(60, 200)), rng.uniform(0.2, 0.7))
    other = np.clip(base + rng.normal(0, 45, 3), 0, 255)
    r = np.arange(size2, dtype=np.float64) / size2
    yy, xx = np.broadcast_arrays(r[:, None], r[None, :])
    ang = rng.uniform(0, 2 * math.pi)
    g = (np.cos(ang) * xx + np.sin(ang) * yy)
    g = (g - g.min()) / max(g.max() - g.min(), 1e-9)
    img = base[None, None, :] * (1 - g[..., None]) + other[None, None, :] * g[..., None]
    kind = int(rng.integers(3))
    if kind == 0:  # blotchy low-frequency texture
        low = rng.normal(0, 1, (6, 6, 3)).astype(np.float32)
        tex = np.asarray(Image.fromarray(((low * 40) + 128).clip(0, 255).astype(np.uint8))
                         .resize((size2, size2), Image.Resampling.BICUBIC), np.float64) - 128
        img = img + tex * rng.uniform(0.4, 1.0)
    elif kind == 1:  # stripes (curtains, panels, shelves)
        period = rng.uniform(0.05, 0.25)
        phase = rng.uniform(0, 1)
        coord = xx if rng.random() < 0.5 else yy
        s = (np.mod(coord / period + phase, 1.0) < 0.5).astype(np.float64)
        img = img + (s[..., None] - 0.5) * rng.normal(0, 35, 3)[None, None, :]
    else:  # objects: a few coloured boxes and blobs
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        d = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(2, 6))):
            x0, y0 = rng.uniform(-0.2, 1.0, 2) * size2
            w, h = rng.uniform(0.1, 0.6, 2) * size2
            col = tuple(int(c) for c in rng.uniform(20, 240, 3))
            if rng.random() < 0.5:
                d.rectangle([x0, y0, x0 + w, y0 + h], fill=col)
            else:
                d.ellipse([x0, y0, x0 + w, y0 + h], fill=col)
        img = np.asarray(pil, np.float64)
    img = Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(img.resize((out, out), Image.Resampling.BILINEAR), np.float32)


def draw_face(seed: int, identity: int, item: int, size: int = 128,
              quality: str = "aligned",
              attributes: IdentityAttributes | None = None) -> np.ndarray:
    """Image ``item`` of ``identity``: uint8 RGB [size, size, 3] (size 64 or 128).

    ``attributes`` replaces the identity's own attributes (pose, lighting and the per-identity
    style still come from ``identity``): evaluation draws faces that share chosen attributes
    with another identity this way."""
    _check(size, quality)
    attrs, rng, p, xform = _layout(seed, identity, item, quality, attributes)
    style = _identity_style(seed, identity)
    wild = quality == "in_the_wild"
    painter = _Painter(size, xform)
    k = _eye_scale(attrs)
    g = attrs.gender
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    age_f = float(np.clip((attrs.age - 32.0) / 40.0, 0.0, 1.0))

    # Colours.
    skin = _skin_rgb(attrs.skin_tone)
    shade = skin * 0.86
    hair = _mix(attrs.hair_colour, (208, 206, 202), attrs.greyness ** 1.2)
    brow_col = _mix(np.asarray(attrs.hair_colour) * 0.75, (170, 168, 165), 0.6 * attrs.greyness)
    lip = _mix(skin * 0.82, (175, 70, 80), 0.25 + 0.25 * sig(-2.5 * g) * style["lip_tint"])
    clothes = np.asarray(attrs.clothes_colour, np.float64)

    # Head.
    width = math.exp(0.055 * attrs.weight + 0.03 * attrs.size + 0.03 * g)
    head = _Head(a_up=30.5 * width * k, a_lo=31.5 * width * (1 + 0.04 * age_f) * k,
                 b_up=46.0 * k, b_lo=43.0 * math.exp(0.02 * attrs.size) * k, cy=7.0 * k,
                 n_jaw=2.0 + 1.0 * sig(2.5 * g), taper=0.22 * sig(-2.5 * g))
    chin_v = head.cy + head.b_lo
    vol = attrs.hair_volume
    hair_a = head.a_up * (1.05 + 0.16 * vol) + 1.0
    hair_b = head.b_up * (1.03 + 0.1 * vol) + 1.0
    long_hair = attrs.hair_length > 0.3

    # Long hair behind the head.
    if long_hair:
        v_end = head.cy + head.b_lo * (0.1 + 1.25 * attrs.hair_length)
        t = np.linspace(math.pi, 2 * math.pi, 25)
        top_u, top_v = hair_a * np.cos(t), head.cy + hair_b * np.sin(t)
        flare = 1.0 + 0.1 * vol
        side_u = np.array([hair_a * flare, hair_a * flare * 0.97, hair_a * 0.6, 0.0,
                           -hair_a * 0.6, -hair_a * flare * 0.97, -hair_a * flare])
        side_v = np.array([v_end - 6 * k, v_end, v_end + 2 * k, v_end + 3 * k, v_end + 2 * k,
                           v_end, v_end - 6 * k])
        painter.poly(np.concatenate([top_u, side_u]),
                     np.concatenate([top_v, side_v]), -25.0,
                     hair * 0.85, silhouette=True)

    # Shoulders and clothes.
    sw = min(52.0 * math.exp(0.05 * attrs.size + 0.05 * g + 0.04 * attrs.weight), 56.0) * k
    nw = 11.5 * math.exp(0.09 * attrs.weight + 0.07 * g) * k
    top = chin_v + 4 * k
    cu = np.array([-sw, -sw, -sw * 0.9, -sw * 0.6, -nw - 4 * k, nw + 4 * k, sw * 0.6,
                   sw * 0.9, sw, sw])
    cv = np.array([top + 60 * k, top + 22 * k, top + 12 * k, top + 6 * k, top + 1 * k,
                   top + 1 * k, top + 6 * k, top + 12 * k, top + 22 * k, top + 60 * k])
    painter.poly(cu, cv, -10.0, clothes, silhouette=True)
    # Neck.
    neck_top = head.cy + head.b_lo * 0.4
    painter.poly(np.array([-nw, nw, nw * 1.05, -nw * 1.05]),
                 np.array([neck_top, neck_top, top + 6 * k, top + 6 * k]), -8.0,
                 shade, silhouette=True)
    collar = style["collar"]
    if collar == 1:
        painter.poly(np.array([-nw - 1 * k, 0.0, nw + 1 * k]),
                     np.array([top + 1 * k, top + 14 * k, top + 1 * k]), -9.0, shade)
    elif collar == 2:
        dark = clothes * 0.7
        for sgn in (-1, 1):
            painter.poly(sgn * np.array([nw + 5 * k, 2 * k, nw + 11 * k]),
                         np.array([top, top + 12 * k, top + 7 * k]), -9.0,
                         _mix(clothes, (250, 250, 250), 0.5))
        painter.line(np.array([0.0, 0.0]), np.array([top + 12 * k, top + 40 * k]), -9.0,
                     dark, 1.0)
    else:
        painter.line(np.linspace(-nw - 4 * k, nw + 4 * k, 9),
                     top + 1.5 * k + 3 * k * (1 - np.linspace(-1, 1, 9) ** 2), -9.0,
                     clothes * 0.75, 1.6)

    # Ears.
    ear_u = head.half_width(8.0 * k) - 1.0 * k
    for sgn in (-1, 1):
        eu, ev = _ellipse(sgn * (ear_u + 3.5 * k), 8.0 * k, 4.8 * k, 9.0 * k, 24)
        painter.poly(eu, ev, -6.0, skin * 0.93, silhouette=True)
        eu, ev = _ellipse(sgn * (ear_u + 3.8 * k), 8.5 * k, 2.2 * k, 5.5 * k, 16)
        painter.poly(eu, ev, -6.0, skin * 0.78)

    # Face.
    fu, fv = head.outline()
    painter.poly(fu, fv, 0.0, skin, silhouette=True)
    # Cheek blush.
    if style["blush"] > 0.4:
        for sgn in (-1, 1):
            bu, bv = _ellipse(sgn * 19 * k, 17 * k, 6 * k, 4 * k, 20)
            painter.poly(bu, bv, 14.0, (225, 110, 110), alpha=22 * style["blush"])

    # Beard.
    if attrs.beard > 0.05:
        bound_u = np.linspace(-1.0, 1.0, 21)
        mask_lo = fv > head.cy
        ou, ov = fu[mask_lo], fv[mask_lo]
        keep = ov > 15 * k + 9.5 * k * (1 - np.clip(np.abs(ou) / head.a_lo, 0, 1) ** 1.5)
        ou, ov = ou[keep], ov[keep]  # jaw outline, image right -> chin -> left
        bu = bound_u * head.a_lo * 0.98
        bv = 15 * k + 9.5 * k * (1 - np.abs(bound_u) ** 1.5)
        painter.poly(np.concatenate([ou, bu]), np.concatenate([ov, bv]), 12.0,
                     hair * 0.9, alpha=60 + 175 * attrs.beard)

    # Wrinkles, eye bags, nasolabial folds.
    wr = skin * 0.62
    if age_f > 0:
        for j in range(3):
            uu = np.linspace(-13, 13, 9) * k
            vv = (-19 - 5.5 * j) * k - 1.5 * k * (1 - (uu / (13 * k)) ** 2) - p.brow_raise * 0.6 * k
            painter.line(uu, vv, 18.0, wr, 0.8, alpha=170 * age_f * (1 - 0.25 * j))
        for sgn in (-1, 1):
            for j in (-1, 0, 1):
                painter.line(sgn * np.array([22.5, 26.0]) * k,
                             np.array([0.5 + j * 1.5, 0.5 + j * 3.2]) * k, 14.0, wr, 0.7,
                             alpha=180 * age_f)
    nose_w = 5.6 * (1.0 + 0.3 * attrs.nose_width) * k
    mouth_v = 30.5 * k
    mouth_w = (9.5 + 0.8 * p.smile) * k
    for sgn in (-1, 1):
        uu = sgn * np.array([nose_w + 2 * k, nose_w + 4 * k, mouth_w + 2.5 * k])
        vv = np.array([17 * k, 23 * k, mouth_v + 1 * k])
        painter.line(uu, vv, 20.0, skin * 0.7, 0.9, alpha=40 + 90 * age_f + 50 * max(p.smile, 0))
        bu = sgn * np.linspace(9, 21, 7) * k
        painter.line(bu, (4.2 + 1.2 * (1 - ((np.abs(bu) / k - 15) / 6) ** 2)) * k, _Z_EYE, wr,
                     0.8, alpha=50 + 120 * age_f)

    # Nose.
    nu = np.array([-1.0, 1.0, 1.8, -1.8]) * k
    painter.poly(nu * 0.8 + 1.5 * k, np.array([-1, -1, 17, 17]) * k, _Z_NOSE - 6, skin * 0.9,
                 alpha=110)
    for sgn in (-1, 1):
        wu, wv = _ellipse(sgn * (nose_w - 1.2 * k), 19.0 * k, 3.0 * k, 2.6 * k, 16)
        painter.poly(wu, wv, _Z_NOSE - 8, skin * 0.84)
        nu_, nv_ = _ellipse(sgn * (nose_w - 2.8 * k), 21.0 * k, 1.7 * k, 0.9 * k, 12)
        painter.poly(nu_, nv_, _Z_NOSE - 6, skin * 0.4)
    tu, tv = _ellipse(0.0, 19.0 * k, 3.6 * k, 2.8 * k, 16)
    painter.poly(tu, tv, _Z_NOSE, skin * 0.95)

    # Mouth.
    s = p.smile
    corner_v = mouth_v - 2.6 * s * k
    uu = np.array([-1.0, -0.55, -0.15, 0.0, 0.15, 0.55, 1.0]) * mouth_w
    upper_top = np.array([corner_v, mouth_v - 2.2 * k, mouth_v - 2.9 * k, mouth_v - 2.3 * k,
                          mouth_v - 2.9 * k, mouth_v - 2.2 * k, corner_v])
    line_v = corner_v + (mouth_v - corner_v) * (1 - (uu / mouth_w) ** 2) * 1.15
    open_ = max(0.0, s - 0.55) * 5.0 * k
    lower_bottom = line_v + open_ + (3.6 * k) * (1 - (uu / mouth_w) ** 2) ** 0.7
    painter.poly(np.concatenate([uu, uu[::-1]]), np.concatenate([upper_top, line_v[::-1]]),
                 _Z_MOUTH, lip * 0.9)
    if open_ > 0:
        bulge = 1 - (uu[::-1] / mouth_w) ** 2
        painter.poly(np.concatenate([uu, uu[::-1]]),
                     np.concatenate([line_v, line_v[::-1] + open_ * bulge]), _Z_MOUTH,
                     (70, 25, 30))
        painter.poly(np.concatenate([uu, uu[::-1]]),
                     np.concatenate([line_v, line_v[::-1] + 0.5 * open_ * bulge]), _Z_MOUTH,
                     (240, 238, 230))
    painter.poly(np.concatenate([uu, uu[::-1]]),
                 np.concatenate([line_v + open_ * (1 - (uu / mouth_w) ** 2),
                                 lower_bottom[::-1]]), _Z_MOUTH, lip)
    painter.line(uu, line_v + 0.5 * open_ * (1 - (uu / mouth_w) ** 2), _Z_MOUTH, lip * 0.55, 0.7)

    # Eyes.
    eye_rx, eye_up, eye_lo = 6.3 * k, 3.5 * k, 2.5 * k
    iris_r, pupil_r = 2.75 * k, 1.3 * k
    gu, gv = p.gaze[0] * k, p.gaze[1] * k
    t = np.linspace(-1.0, 1.0, 15)
    for sgn in (-1, 1):
        cx = sgn * _HALF_IOD
        upper = -eye_up * (1 - t ** 2) ** 0.8
        lower = eye_lo * (1 - t ** 2) ** 0.9
        su = np.concatenate([cx + t * eye_rx, cx + t[::-1] * eye_rx])
        sv = np.concatenate([upper, lower[::-1]])
        painter.poly(su, sv, _Z_EYE, (246, 244, 238))
        iu, iv = _ellipse(cx + gu, gv, iris_r, iris_r, 24)
        rel = np.clip((iu - cx) / eye_rx, -1.0, 1.0)
        iv = np.clip(iv, -eye_up * (1 - rel ** 2) ** 0.8, eye_lo * (1 - rel ** 2) ** 0.9)
        painter.poly(iu, iv, _Z_EYE, attrs.eye_colour)
        pu, pv = _ellipse(cx + gu, gv, pupil_r, pupil_r, 16)
        painter.poly(pu, pv, _Z_EYE, (12, 10, 12))
        painter.line(cx + t * eye_rx * 1.05, upper - 0.3 * k, _Z_EYE, (45, 32, 30), 1.0)
        # Eyebrows.
        bt = np.linspace(0.0, 1.0, 11)
        bu = cx + sgn * (-8.5 + 17.5 * bt) * k
        bv = (-9.5 - 3.2 * np.sin(np.pi * (0.35 + 0.65 * bt)) - p.brow_raise) * k
        thick = (1.0 + 3.0 * attrs.brow_thickness) * k * (1.0 - 0.45 * bt)
        painter.poly(np.concatenate([bu, bu[::-1]]),
                     np.concatenate([bv - thick / 2, (bv + thick / 2)[::-1]]), _Z_BROW,
                     brow_col)

    # Front hair: a cap from the outer hair outline down to the hairline.
    bald = attrs.baldness
    temple_v = -4.0 * k
    side_v = (head.cy + head.b_lo * 0.55 * attrs.hair_length) if long_hair else 2.0 * k
    ang0 = math.asin(np.clip((side_v - head.cy) / hair_b, -1.0, 1.0))
    if bald < 0.6:
        t = np.linspace(math.pi - ang0, 2 * math.pi + ang0, 33)
        outer_u, outer_v = hair_a * np.cos(t), head.cy + hair_b * np.sin(t)
        if long_hair and style["fringe"] > 0.5:
            centre_v = -15.5 * k
        else:
            centre_v = (-24.0 - 22.0 * bald) * k
        hl_u = np.linspace(1.0, -1.0, 17)
        part = style["parting"] * 0.5
        hl_v = (temple_v + (centre_v - temple_v) * (1 - np.abs(hl_u) ** 2.5)
                - 3.0 * k * np.exp(-((hl_u - part) / 0.15) ** 2))
        hl_u = hl_u * head.half_width(hl_v) * 0.97
        side_r_v = np.linspace(side_v, temple_v, 6)
        side_r_u = head.half_width(side_r_v) - (2.5 * k if long_hair else 0.5 * k)
        u_cap = np.concatenate([outer_u, side_r_u, hl_u, -side_r_u[::-1]])
        v_cap = np.concatenate([outer_v, side_r_v, hl_v, side_r_v[::-1]])
        painter.poly(u_cap, v_cap, 0.0, hair, silhouette=True)
    else:
        for sgn in (-1, 1):  # fringe of hair around the sides only
            vv = np.linspace(-14.0 * k, 6.0 * k, 8)
            hw = head.half_width(vv)
            painter.poly(sgn * np.concatenate([hw - 1.5 * k, (hw + (2 + 3 * vol) * k)[::-1]]),
                         np.concatenate([vv, vv[::-1]]), -4.0, hair, silhouette=True)

    return _finish(painter, p, rng, size, wild)


def _finish(painter: _Painter, p: _ImageParams, rng, size, wild):
    face = np.asarray(painter.canvas, np.float32)
    m = np.asarray(painter.mask, np.float32)[..., None] * (1.0 / 255.0)
    n2 = face.shape[0]
    # Lighting: a linear gradient over the figure (not over the background).
    r = np.arange(n2, dtype=np.float32) / n2 - 0.5
    grad = (2.0 * math.cos(p.light_angle) * r[None, :]
            + 2.0 * math.sin(p.light_angle) * r[:, None])
    light = p.brightness * (1.0 + p.light_strength * grad)
    face = face * (1.0 + m * (light[..., None] - 1.0))
    if wild:
        bg = _background(rng, n2)
        face = face * m + bg * (1.0 - m)
        face = face * rng.uniform(0.9, 1.1, 3).astype(np.float32)[None, None, :]
    img = Image.fromarray(np.clip(face + 0.5, 0, 255).astype(np.uint8)).reduce(2)
    if wild:
        if rng.random() < 0.6:  # blur: down- and up-sampling
            f = rng.uniform(0.45, 0.85)
            small = max(8, int(size * f))
            img = img.resize((small, small), Image.Resampling.BILINEAR).resize(
                (size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, np.float32) + rng.normal(0, rng.uniform(1.0, 7.0), (size, size, 3))
        img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8))
        if rng.random() < 0.6:
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=int(rng.integers(25, 75)))
            buf.seek(0)
            img = Image.open(buf).convert("RGB")
    return np.asarray(img, np.uint8).copy()
