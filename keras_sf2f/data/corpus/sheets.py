"""PNG writers for looking at data: contact sheets of images and stacks of spectrograms.

PIL only (no matplotlib). The spectrogram colours come from ``PERCEPTUAL_LUT``, a 256-entry
lookup table interpolated from nine anchor colours along a viridis-like path (dark violet ->
blue -> green -> yellow), whose lightness increases monotonically, so brighter always means
more energy and the image survives greyscale printing.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Anchors of a viridis-like, monotonically brightening colour path.
_ANCHORS = np.array([
    (68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
    (31, 158, 137), (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37)],
    dtype=np.float64)


def _make_lut(n: int = 256) -> np.ndarray:
    x = np.linspace(0.0, 1.0, len(_ANCHORS))
    t = np.linspace(0.0, 1.0, n)
    return np.stack([np.interp(t, x, _ANCHORS[:, c]) for c in range(3)], axis=1).round().astype(
        np.uint8)


PERCEPTUAL_LUT = _make_lut()


def colourize(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Maps values to RGB uint8 through ``PERCEPTUAL_LUT`` (clipped to [vmin, vmax])."""
    scale = 255.0 / max(vmax - vmin, 1e-12)
    idx = np.clip((np.asarray(values, np.float64) - vmin) * scale, 0, 255).astype(np.int64)
    return PERCEPTUAL_LUT[idx]


def _font(size: int = 11):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _text_height(font) -> int:
    box = font.getbbox("Ag")
    return int(box[3]) + 2


def _ensure_dir(path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"images must be [H, W], [H, W, 1|3|4], got {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return a[:, :, :3]


def write_contact_sheet(path: str, images: Sequence[np.ndarray], labels: Sequence[str],
                        columns: int = 8, pad: int = 4, font_size: int = 10) -> np.ndarray:
    """Writes a PNG grid of ``images`` with a label under each; returns the sheet as RGB.

    Images may differ in size: each cell is as large as the largest image, images centred.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if not images:
        raise ValueError("no images to write")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    imgs = [_as_rgb(im) for im in images]
    cell_h = max(im.shape[0] for im in imgs)
    cell_w = max(im.shape[1] for im in imgs)
    font = _font(font_size)
    text_h = _text_height(font)
    # Labels longer than a cell are cut so cells never overlap.
    columns = min(columns, len(imgs))
    rows = (len(imgs) + columns - 1) // columns
    width = columns * (cell_w + pad) + pad
    height = rows * (cell_h + text_h + pad) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (im, label) in enumerate(zip(imgs, labels)):
        r, c = divmod(i, columns)
        x0 = pad + c * (cell_w + pad)
        y0 = pad + r * (cell_h + text_h + pad)
        ox = (cell_w - im.shape[1]) // 2
        oy = (cell_h - im.shape[0]) // 2
        sheet.paste(Image.fromarray(im), (x0 + ox, y0 + oy))
        text = str(label)
        while text and draw.textlength(text, font=font) > cell_w + pad - 1:
            text = text[:-1]
        draw.text((x0, y0 + cell_h + 1), text, fill=(0, 0, 0), font=font)
    _ensure_dir(path)
    sheet.save(path, format="PNG")
    return np.asarray(sheet)


# Height in pixels of the colour bar strip at the bottom of a spectrogram sheet (bar only,
# without its labels).
COLOUR_BAR_HEIGHT = 10


def write_spectrogram_png(path: str, log_mels: Sequence[np.ndarray], titles: Sequence[str],
                          bin_height: int = 3, frame_width: int = 1,
                          vmin: float | None = None, vmax: float | None = None,
                          font_size: int = 11, frame_seconds: float = 0.01,
                          band_hz: Sequence[float] | None = None,
                          value_label: str = "log-mel energy") -> np.ndarray:
    """Writes spectrograms ``[frames, bins]`` stacked vertically, each under its title, with
    axes and a colour bar; returns the image as RGB.

    Time runs left to right, ticked in seconds (``frame_seconds`` per frame); the lowest
    frequency bin is at the bottom, its axis ticked with the band index and, when ``band_hz``
    (one centre frequency per bin) is given, the band's centre frequency. All spectrograms
    share one colour scale (``vmin``/``vmax``, by default the 1st and 99.5th percentiles of all
    values), drawn as a colour bar under the last panel with its end values and
    ``value_label``, so their levels can be compared.
    """
    if len(log_mels) != len(titles):
        raise ValueError(f"{len(log_mels)} spectrograms but {len(titles)} titles")
    if not log_mels:
        raise ValueError("no spectrograms to write")
    mats = []
    for m in log_mels:
        m = np.asarray(m, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < 1:
            raise ValueError(f"spectrograms must be [frames, bins], got {m.shape}")
        mats.append(m)
    bins = mats[0].shape[1]
    if band_hz is not None and len(band_hz) != bins:
        raise ValueError(f"band_hz has {len(band_hz)} frequencies for {bins} bins")
    finite = np.concatenate([m[np.isfinite(m)] for m in mats])
    if vmin is None:
        vmin = float(np.percentile(finite, 1.0)) if finite.size else 0.0
    if vmax is None:
        vmax = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    font = _font(font_size)
    text_h = _text_height(font)
    pad, tick = 6, 3
    panels = []
    for m in mats:
        rgb = colourize(np.nan_to_num(m.T[::-1], nan=vmin), vmin, vmax)  # [bins, frames, 3]
        rgb = np.repeat(np.repeat(rgb, bin_height, axis=0), frame_width, axis=1)
        panels.append(rgb)

    def band_label(b: int) -> str:
        if band_hz is None:
            return f"band {b}"
        hz = float(band_hz[b])
        return f"{hz / 1000:.1f} kHz" if hz >= 1000 else f"{hz:.0f} Hz"

    # Left axis: a few bands, bottom, middle and top.
    band_ticks = sorted({0, bins // 2, bins - 1})
    left = pad + max(int(font.getlength(band_label(b))) for b in band_ticks) + tick + 2
    # Bottom axis: a tick every second (every half second for panels under 2 s).
    longest = max(m.shape[0] for m in mats) * frame_seconds
    step_s = 1.0 if longest >= 2.0 else 0.5
    axis_h = tick + text_h
    width = left + max(p.shape[1] for p in panels) + 2 * pad
    bar_title = f"colour: {value_label} (one scale for all panels)"
    axes_title = ("x: time in seconds; y: mel bands, labelled by centre frequency"
                  if band_hz is not None else "x: time in seconds; y: mel band index")
    width = max(width, max(int(font.getlength(str(t))) for t in titles) + 2 * pad,
                left + int(max(font.getlength(bar_title), font.getlength(axes_title))) + pad)
    bar_w = min(256, width - left - 2 * pad)
    height = (sum(p.shape[0] + text_h + axis_h + pad for p in panels)
              + COLOUR_BAR_HEIGHT + 3 * text_h + 2 * pad)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    grey = (90, 90, 90)
    y = pad
    for m, p, title in zip(mats, panels, titles):
        draw.text((left, y), str(title), fill=(0, 0, 0), font=font)
        y += text_h
        img.paste(Image.fromarray(p), (left, y))
        for b in band_ticks:
            # Band b occupies rows counted from the panel's bottom.
            row = y + p.shape[0] - (b + 0.5) * bin_height
            draw.line([(left - tick, row), (left - 1, row)], fill=grey)
            label = band_label(b)
            draw.text((left - tick - 2 - font.getlength(label), row - text_h / 2), label,
                      fill=grey, font=font)
        bottom = y + p.shape[0]
        seconds = m.shape[0] * frame_seconds
        for k in range(int(seconds / step_s) + 1):
            x = left + k * step_s / frame_seconds * frame_width
            draw.line([(x, bottom), (x, bottom + tick)], fill=grey)
            label = f"{k * step_s:g} s"
            draw.text((x - font.getlength(label) / 2 if k else x, bottom + tick), label,
                      fill=grey, font=font)
        y = bottom + axis_h + pad
    # Colour bar: the shared scale, low values left.
    bar = np.repeat(PERCEPTUAL_LUT[np.linspace(0, 255, bar_w).round().astype(int)][None],
                    COLOUR_BAR_HEIGHT, axis=0)
    draw.text((left, y), axes_title, fill=(0, 0, 0), font=font)
    y += text_h
    draw.text((left, y), bar_title, fill=(0, 0, 0), font=font)
    y += text_h
    img.paste(Image.fromarray(bar), (left, y))
    low, high = f"{vmin:.2f}", f"{vmax:.2f}"
    draw.text((left, y + COLOUR_BAR_HEIGHT), low, fill=grey, font=font)
    draw.text((left + bar_w - font.getlength(high), y + COLOUR_BAR_HEIGHT), high, fill=grey,
              font=font)
    _ensure_dir(path)
    img.save(path, format="PNG")
    return np.asarray(img)
