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

from keras_sf2f import files

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


def label_font(size: int = 11):
    """PIL's default font at ``size`` px (the bitmap font on a Pillow without FreeType): the
    one font of the pictures the project draws (contact sheets, spectrograms, grids)."""
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
    font = label_font(font_size)
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
    with files.atomic_write(path, "wb") as f:
        sheet.save(f, format="PNG")
    return np.asarray(sheet)


# Width in pixels of the vertical colour bar right of the spectrogram panels (the bar only,
# without its ticks and labels).
COLOUR_BAR_WIDTH = 14


def _vertical_text(img: Image.Image, xy, text: str, font, fill) -> None:
    """Draws ``text`` reading bottom to top with its top-left corner (after rotation) at
    ``xy``, as axis titles are set."""
    w = int(font.getlength(text)) + 2
    h = _text_height(font)
    strip = Image.new("L", (w, h), 0)
    ImageDraw.Draw(strip).text((1, 0), text, fill=255, font=font)
    strip = strip.rotate(90, expand=True)
    img.paste(Image.new("RGB", strip.size, fill), (int(xy[0]), int(xy[1])), strip)


def _band_ticks(bins: int, min_step: int = 1) -> list:
    """About five bands to tick, at least ``min_step`` apart (labels must not overlap), the
    lowest and the highest among them."""
    if bins < 2:
        return [0]
    step = max(1, min_step, round((bins - 1) / 4))
    ticks = list(range(0, bins - 1, step))
    if bins - 1 - ticks[-1] < max(step / 2, min_step) and len(ticks) > 1:
        ticks.pop()  # keep the top label apart from the one below
    return ticks + [bins - 1]


def write_spectrogram_png(path: str, log_mels: Sequence[np.ndarray], titles: Sequence[str],
                          bin_height: int = 3, frame_width: int = 1,
                          vmin: float | None = None, vmax: float | None = None,
                          font_size: int = 11, frame_seconds: float = 0.01,
                          band_hz: Sequence[float] | None = None,
                          value_label: str = "log-mel energy",
                          title: str | None = None) -> np.ndarray:
    """Writes spectrograms ``[frames, bins]`` stacked vertically, each under its title, with
    axes and a colour bar, under a figure ``title``; returns the image as RGB.

    Time runs left to right, ticked in seconds (``frame_seconds`` per frame), with the axis
    title "time (s)" under the last panel; the lowest frequency bin is at the bottom, about
    five bands ticked with their index and, when ``band_hz`` (one centre frequency per bin) is
    given, the band's centre frequency, under the axis title "mel band (centre frequency)".
    All spectrograms share one colour scale (``vmin``/``vmax``, by default the 1st and 99.5th
    percentiles of all values), drawn as a vertical colour bar right of the panels, ticked
    with values and titled ``value_label`` (the unit), so their levels can be compared.
    ``title`` defaults to ``value_label`` and the number of spectrograms.
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
    if title is None:
        title = (f"{value_label[:1].upper()}{value_label[1:]} of {len(mats)} "
                 f"{'utterance' if len(mats) == 1 else 'utterances'}")
    font = label_font(font_size)
    title_font = label_font(font_size + 3)
    text_h = _text_height(font)
    title_h = _text_height(title_font)
    pad, tick, black, grey = 6, 3, (0, 0, 0), (90, 90, 90)
    panels = []
    for m in mats:
        rgb = colourize(np.nan_to_num(m.T[::-1], nan=vmin), vmin, vmax)  # [bins, frames, 3]
        rgb = np.repeat(np.repeat(rgb, bin_height, axis=0), frame_width, axis=1)
        panels.append(rgb)

    def hz_label(b: int) -> str:
        hz = float(band_hz[b])
        return f"{hz / 1000:.1f} kHz" if hz >= 1000 else f"{hz:.0f} Hz"

    band_ticks = _band_ticks(bins, min_step=-(-text_h // bin_height))
    y_title = "mel band: index, centre frequency" if band_hz is not None else "mel band index"
    # Left: the vertical axis title, then two columns of tick labels: the band index and
    # (with band_hz) the band's centre frequency next to the tick.
    index_w = max(int(font.getlength(str(b))) for b in band_ticks)
    hz_w = max(int(font.getlength(hz_label(b))) for b in band_ticks) + 2 * pad \
        if band_hz is not None else 0
    left = pad + text_h + pad + index_w + hz_w + tick + 2
    # Bottom axis: a tick every second (every half second for panels under 2 s).
    longest = max(m.shape[0] for m in mats) * frame_seconds
    step_s = 1.0 if longest >= 2.0 else 0.5
    axis_h = tick + text_h
    plot_w = max(max(p.shape[1] for p in panels),
                 max(int(font.getlength(str(t))) for t in titles))
    # Right: the colour bar, its value ticks and its (vertical) title.
    bar_x = left + plot_w + 3 * pad
    bar_values = np.linspace(vmin, vmax, 5)
    bar_labels = [f"{v:.2f}" for v in bar_values]
    bar_title_x = bar_x + COLOUR_BAR_WIDTH + tick + 2 + max(int(font.getlength(t))
                                                            for t in bar_labels) + pad
    width = bar_title_x + text_h + pad
    width = max(width, int(title_font.getlength(title)) + 2 * pad)
    top = pad + title_h + pad
    first_panel_top = top + text_h
    last_panel_bottom = top + sum(text_h + p.shape[0] + axis_h + pad for p in panels) \
        - axis_h - pad
    # The colour bar spans the panels, and is tall enough for its five labels.
    bar_h = max(last_panel_bottom - first_panel_top, 5 * text_h)
    height = max(last_panel_bottom + axis_h + pad + text_h + pad,
                 first_panel_top + bar_h + pad,
                 # room for the vertical titles beside short panels
                 first_panel_top + int(max(font.getlength(y_title),
                                           font.getlength(value_label))) + pad)
    img = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((pad, pad), title, fill=black, font=title_font)
    y = top
    for m, p, panel_title in zip(mats, panels, titles):
        draw.text((left, y), str(panel_title), fill=black, font=font)
        y += text_h
        img.paste(Image.fromarray(p), (left, y))
        for b in band_ticks:
            # Band b occupies rows counted from the panel's bottom.
            row = y + p.shape[0] - (b + 0.5) * bin_height
            draw.line([(left - tick, row), (left - 1, row)], fill=grey)
            index_x = left - tick - 2 - hz_w - font.getlength(str(b))
            draw.text((index_x, row - text_h / 2), str(b), fill=black, font=font)
            if band_hz is not None:
                label = hz_label(b)
                draw.text((left - tick - 2 - font.getlength(label), row - text_h / 2), label,
                          fill=grey, font=font)
        bottom = y + p.shape[0]
        seconds = m.shape[0] * frame_seconds
        for k in range(int(seconds / step_s + 1e-9) + 1):
            x = left + k * step_s / frame_seconds * frame_width
            draw.line([(x, bottom), (x, bottom + tick)], fill=grey)
            label = f"{k * step_s:g}"
            draw.text((x - font.getlength(label) / 2 if k else x, bottom + tick), label,
                      fill=grey, font=font)
        y = bottom + axis_h + pad
    # One vertical axis title for the stack of panels (they share the band axis).
    _vertical_text(img, (pad, first_panel_top + max(
        0, (last_panel_bottom - first_panel_top - font.getlength(y_title)) / 2)),
        y_title, font, black)
    x_title = "time (s)"
    draw.text((left + (panels[-1].shape[1] - font.getlength(x_title)) / 2, y - pad),
              x_title, fill=black, font=font)
    # Colour bar: the shared scale, low values at the bottom, as high as the panels.
    levels = np.linspace(255, 0, bar_h).round().astype(int)
    bar = np.repeat(PERCEPTUAL_LUT[levels][:, None], COLOUR_BAR_WIDTH, axis=1)
    img.paste(Image.fromarray(bar), (bar_x, first_panel_top))
    draw.rectangle([bar_x - 1, first_panel_top - 1, bar_x + COLOUR_BAR_WIDTH,
                    first_panel_top + bar_h], outline=grey)
    label_x = bar_x + COLOUR_BAR_WIDTH + tick + 2
    for i, label in enumerate(bar_labels):
        row = first_panel_top + bar_h - 1 - i * (bar_h - 1) / (len(bar_labels) - 1)
        draw.line([(bar_x + COLOUR_BAR_WIDTH, row), (bar_x + COLOUR_BAR_WIDTH + tick, row)],
                  fill=grey)
        draw.text((label_x, row - text_h / 2), label, fill=grey, font=font)
    bar_title = value_label
    _vertical_text(img, (bar_title_x,
                         first_panel_top + max(0, (bar_h - font.getlength(bar_title)) / 2)),
                   bar_title, font, black)
    _ensure_dir(path)
    with files.atomic_write(path, "wb") as f:
        img.save(f, format="PNG")
    return np.asarray(img)
