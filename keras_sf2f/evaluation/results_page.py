"""The results page: ``index.html``, a self-contained static page like the paper's figures.

Layout: a header with what the run is (data, checkpoints and steps, protocol, which
identities), then one table. Each shown identity (the first ``grid_identities`` of the split,
as the figure grids) is a row: its name and ground-truth photo, then for each speech input
(the 1.25 s crop, the 5 s crop, all windows) a group of columns: an audio player with
exactly the speech the faces were made from (``speech_audio.py``) right above every model's
face at every resolution it draws; faces not made from speech (the voice-attribute oracle)
last, once per identity. With many faces per input (an ablation's variants) the inputs are
stacked instead of side by side, so the page stays narrow. Then the report's own metric
tables and face-figure sections (the same markdown lines report.md is made of, rendered
here: one source, nothing recomputed), and the notes.

Voice typicality: under each identity's photo, each model's ``voice_typicality`` of that
identity's speech, as a percentile, exactly as the model's export computes it (the
evaluation gets it from ``keras_sf2f.serving``, see ``Evaluator.voice_typicality``); a voice
below the export's threshold (``typicality_warning_below``) is marked as atypical, in words and
colour. A paragraph above the table says what the figure is, the threshold, what a warning
means, and why a model has no figure when it could not be computed.

Self-contained: no server, no network, no scripts, no fonts. The faces are PNG files in
``images/`` and the speech 16-bit PCM WAV files in ``audio/`` next to ``index.html``,
referenced by relative paths; every file is written atomically (``keras_sf2f/files.py``).
Faces smaller than the display size (``DISPLAY_PX``, 128) are shown enlarged with
nearest-neighbour sampling (CSS ``image-rendering: pixelated``), and their captions say so.
All text is HTML-escaped.

``write_page`` takes a ``Page`` of plain values (testable on synthetic inputs);
``write_evaluation_page`` and ``write_ablation_page`` build it from an evaluation
(``evaluate.write_report``) and from the ablation runner (``ablations.write_tables``).
"""

from __future__ import annotations

import dataclasses
import html
import io
import json
import math
import os
import re
import time
import urllib.parse
import wave

import numpy as np
from absl import logging
from PIL import Image

from keras_sf2f import files
from keras_sf2f.evaluation import results
from keras_sf2f.image_ranges import normalized_to_uint8_np

__all__ = ["DISPLAY_PX", "PAGE_FILE", "Column", "Row", "Page", "write_page",
           "markdown_to_html", "write_evaluation_page", "write_ablation_page",
           "checkpoints_from_notes", "RESOLUTION_KEY", "Typicality", "percent",
           "typicality_npz", "typicality_from_npz", "typicality_section"]

PAGE_FILE = "index.html"
AUDIO_DIR = "audio"
IMAGE_DIR = "images"
#: Faces are shown at least this large (CSS px); smaller ones are enlarged nearest-neighbour.
DISPLAY_PX = 128
#: samples.npz key of a lower resolution: ``resolution|<model>|<protocol label>|<size>``.
RESOLUTION_KEY = "resolution|{model}|{label}|{size}"
# Files the page owns in its directories (stale ones from an earlier page are removed).
_OWNED = re.compile(r"^r\d{2,}_.+\.(png|wav)$")
#: samples.npz keys of a model's voice typicality (the pictured identities' values; what it
#: is or why there is none, as JSON).
TYPICALITY_VALUES_KEY = "typicality|{model}"
TYPICALITY_META_KEY = "typicality_meta|{model}"


def _oracle_key(model: str, label: str) -> str:
    return f"{model}|{label}"


def _oracle_note(label: str) -> str:
    """What each kind of oracle face is (keras_sf2f/evaluation/oracle.py), under its column's
    title; keyed by the evaluation's own protocol names."""
    return {
        results.ORACLE_PROTOCOL:
            "no model, no speech: the identity's voice-linked attributes and its own "
            "appearance draws (hair colour, beard, ...), which no voice decides",
        results.ORACLE_VOICE_ONLY_PROTOCOL:
            "no model, no speech: only what the voice decides is the identity's; hair "
            "colour, beard and the rest drawn at random (a perfect reading of the voice, "
            "drawn sharp)",
        results.ORACLE_VOICE_MEAN_PROTOCOL:
            "no model, no speech: the pixel mean of that many voice-only faces (what a "
            "model trained with a pixel loss draws from a perfect reading of the voice)",
    }.get(label, "")


@dataclasses.dataclass
class Column:
    key: str                 # the model's key in Row.faces
    title: str
    note: str = ""           # a line under the title
    from_speech: bool = True  # False: one face per identity (e.g. the oracle)


@dataclasses.dataclass
class Typicality:
    """One model's voice typicality of one identity: ``value`` in [0, 1] (the export's
    ``voice_typicality``) or None, and then ``unavailable`` says why."""
    value: float | None
    warning_below: float
    unavailable: str = ""

    @property
    def low(self) -> bool:
        return self.value is not None and self.value < self.warning_below


@dataclasses.dataclass
class Row:
    name: str
    ground_truth: np.ndarray | None  # uint8 [S, S, 3]
    # input label -> speech_audio.SpeechClip (samples or why there are none)
    clips: dict = dataclasses.field(default_factory=dict)
    # (column key, input label; None for columns not made from speech) -> {size: uint8 image}
    faces: dict = dataclasses.field(default_factory=dict)
    # column key -> Typicality (models that have one; shown under the photo in column order)
    typicality: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Page:
    title: str
    subtitle: str = ""
    facts: list = dataclasses.field(default_factory=list)     # [(label, markdown text)]
    inputs: list = dataclasses.field(default_factory=list)    # [(label, description)]
    columns: list = dataclasses.field(default_factory=list)   # [Column]
    rows: list = dataclasses.field(default_factory=list)      # [Row]
    faces_text: list = dataclasses.field(default_factory=list)  # paragraphs above the faces
    # What the voice typicality under the photos is (markdown paragraphs, in a box above the
    # faces; empty: no model has one).
    typicality_text: list = dataclasses.field(default_factory=list)
    markdown: list = dataclasses.field(default_factory=list)  # metric sections (lines)
    notes: list = dataclasses.field(default_factory=list)     # markdown lines, one per note
    links: list = dataclasses.field(default_factory=list)     # [(text, relative path)]
    # Speech inputs side by side (False) or stacked (True); None: stacked when an input has
    # more than two faces per identity (many models or resolutions), so the page stays narrow.
    stack_inputs: bool | None = None


# -- markdown (the subset the reports use) ----------------------------------------------------

def _inline(text: str) -> str:
    """Escaped text with `code`, **bold** and relative [links](path)."""
    out, last = [], 0
    for match in re.finditer(r"`([^`]+)`|\*\*(.+?)\*\*|\[([^\]]+)\]\(([^)\s]+)\)", text):
        out.append(html.escape(text[last:match.start()]))
        code, bold, link_text, url = match.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif bold is not None:
            out.append(f"<strong>{_inline(bold)}</strong>")
        elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:|^/", url):
            out.append(html.escape(link_text))  # only relative links: the page stays offline
        else:
            out.append(f'<a href="{html.escape(url)}">{html.escape(link_text)}</a>')
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)( ± \d+(\.\d*)?)?$|^-$|^n/a$")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def markdown_to_html(lines, heading_offset: int = 1) -> str:
    """HTML of the markdown the reports write: headings (shifted down by
    ``heading_offset`` levels), pipe tables, ``- `` lists, paragraphs; inline `code`, **bold**
    and relative links. Image lines are left out (the page shows its own faces)."""
    out, paragraph, items, table = [], [], [], []
    used = set()

    def flush():
        if paragraph:
            out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()
        if table:
            rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in table]
            body = [r for r in rows[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r)]
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            cells = "".join(
                "<tr>" + "".join(
                    f'<td class="num">{_inline(c)}</td>' if _NUMBER.match(c)
                    else f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
            out.append(f'<div class="table-wrap"><table class="metrics"><thead><tr>{head}'
                       f"</tr></thead><tbody>{cells}</tbody></table></div>")
            table.clear()

    for raw in lines:
        for line in str(raw).split("\n"):
            stripped = line.strip()
            if not stripped:
                flush()
            elif stripped.startswith("#"):
                flush()
                level = len(stripped) - len(stripped.lstrip("#"))
                text = stripped[level:].strip()
                slug, k = _slug(text), 2
                base = slug
                while slug in used:
                    slug, k = f"{base}-{k}", k + 1
                used.add(slug)
                h = min(6, level + heading_offset)
                out.append(f'<h{h} id="{slug}">{_inline(text)}</h{h}>')
            elif stripped.startswith("|"):
                if paragraph or items:
                    flush()
                table.append(stripped)
            elif stripped.startswith("- "):
                if paragraph or table:
                    flush()
                items.append(stripped[2:])
            elif stripped.startswith("!["):
                flush()
            else:
                if table:
                    flush()
                if items:  # a continuation line of the last item
                    items[-1] += " " + stripped
                else:
                    paragraph.append(stripped)
    flush()
    return "\n".join(out)


# -- files ------------------------------------------------------------------------------------

def _write_png(path: str, image: np.ndarray) -> None:
    with files.atomic_write(path, "wb") as f:
        Image.fromarray(np.asarray(image, np.uint8)).save(f, format="PNG")


def _write_wav(path: str, samples: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV."""
    data = np.asarray(samples, np.int16).astype("<i2").tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(data)
    with files.atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())


def _file_slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z.]+", "_", text).strip("_") or "x"


# -- the page ---------------------------------------------------------------------------------

_CSS = """
:root { color-scheme: light; --ink: #1d232b; --muted: #5b6573; --line: #d9dee5;
  --band: #f4f6f9; --accent: #2f5f98; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans",
  "Liberation Sans", Arial, sans-serif; color: var(--ink); background: #fff; }
header { padding: 22px 32px 14px; border-bottom: 1px solid var(--line); background: var(--band); }
h1 { margin: 0 0 4px; font-size: 26px; }
.subtitle { margin: 0 0 12px; color: var(--muted); font-size: 16px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; margin: 0;
  font-size: 14px; }
dl.facts dt { font-weight: 600; color: var(--muted); }
dl.facts dd { margin: 0; }
nav { padding: 8px 32px; font-size: 14px; border-bottom: 1px solid var(--line); }
nav a { margin-right: 18px; }
main { padding: 8px 32px 40px; }
a { color: var(--accent); }
code { font: 13px/1.3 ui-monospace, "DejaVu Sans Mono", "Liberation Mono", monospace;
  background: var(--band); padding: 0 3px; border-radius: 3px; }
h2 { margin: 28px 0 8px; font-size: 21px; border-bottom: 2px solid var(--line);
  padding-bottom: 4px; }
h3 { margin: 22px 0 6px; font-size: 17px; }
h4 { margin: 16px 0 4px; font-size: 15px; }
p, ul { max-width: 78em; }
dl.inputs { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px;
  font-size: 13px; max-width: 78em; margin: 6px 0 4px; }
dl.inputs dt { font-weight: 600; }
dl.inputs dd { margin: 0; color: var(--muted); }
p.lead { max-width: 78em; margin: 6px 0; }
/* Separate borders: with collapsed ones the sticky header's borders would scroll away. */
table.faces { border-collapse: separate; border-spacing: 0; margin-top: 12px; }
table.faces thead { position: sticky; top: 0; z-index: 1; background: #fff; }
table.faces thead th { padding: 4px 8px; text-align: left; font-size: 13px;
  vertical-align: bottom; background: #fff; }
table.faces thead tr:first-child th { font-size: 14px; }
table.faces thead tr:last-child th, table.faces thead th[rowspan] {
  border-bottom: 2px solid var(--ink); }
table.faces thead th.group { text-align: center; border-bottom: 1px solid var(--line);
  border-left: 2px solid var(--line); background: var(--band); }
table.faces thead th .note { display: block; font-weight: 400; color: var(--muted);
  font-size: 11px; max-width: 150px; }
table.faces tbody.identity > tr:last-child > *,
table.faces tbody.identity > tr:first-child > [rowspan] {
  border-bottom: 1px solid var(--line); }
table.faces tbody.identity:nth-of-type(even) { background: #fafbfc; }
table.faces td, table.faces tbody th { padding: 6px 8px; vertical-align: top;
  text-align: left; }
table.faces tr.players td { padding-top: 10px; padding-bottom: 0; }
.group-start { border-left: 2px solid var(--line); }
table.faces tbody th.identity { font-weight: 400; font-size: 13px; padding-top: 10px; }
table.faces tbody th.identity .letter { color: var(--muted); }
table.faces tbody th.identity .name { font-weight: 600; overflow-wrap: anywhere; }
table.faces tbody th.identity figure { display: block; margin-top: 4px; }
td.speech { min-width: 270px; }
td.speech .input { font-weight: 600; font-size: 13px; margin-bottom: 2px; }
td.speech audio { display: block; width: 100%; min-width: 260px; max-width: 420px;
  height: 34px; }
td.speech .where { font-size: 11px; line-height: 1.3; color: var(--muted); max-width: 300px;
  overflow-wrap: anywhere; margin-top: 2px; }
.no-audio { font-size: 12px; color: #8a3b12; background: #fff3e8; border: 1px solid #f0cfae;
  padding: 4px 6px; border-radius: 4px; }
figure { display: inline-block; margin: 0 8px 0 0; vertical-align: top; width: min-content; }
figure img { display: block; background: #eee; }
figure img.px { image-rendering: pixelated; image-rendering: crisp-edges; }
figcaption { font-size: 11px; line-height: 1.25; color: var(--muted); text-align: center;
  padding-top: 2px; }
.missing { color: var(--muted); font-style: italic; }
.typicality { margin-top: 6px; max-width: 190px; font-size: 12px; line-height: 1.3; }
.typicality .typ-title { font-weight: 600; color: var(--muted); }
.typicality .typ { margin-top: 2px; padding: 2px 5px; border-radius: 4px;
  border: 1px solid transparent; }
.typicality .typ-model { color: var(--muted); }
.typicality .typ-value { font-weight: 600; font-variant-numeric: tabular-nums; }
.typicality .typ.low { background: #fdecea; border-color: #e3a49b; color: #86200f; }
.typicality .typ.low .typ-model { color: #86200f; }
.typicality .typ-warn, .typicality .typ-why { display: block; font-size: 11px; }
.typicality .typ.na .typ-value { font-weight: 400; font-style: italic; color: var(--muted); }
.typicality .typ-why { color: var(--muted); }
.typicality-explained { max-width: 78em; margin: 10px 0 4px; padding: 6px 12px;
  border-left: 4px solid var(--accent); background: var(--band); font-size: 14px; }
.typicality-explained p { margin: 5px 0; }
.table-wrap { overflow-x: auto; }
table.metrics { border-collapse: collapse; font-size: 13px; margin: 6px 0 14px; }
table.metrics th, table.metrics td { border: 1px solid var(--line); padding: 3px 8px; }
table.metrics th { background: var(--band); text-align: left; }
table.metrics td.num { text-align: right; font-variant-numeric: tabular-nums;
  white-space: nowrap; }
footer { padding: 12px 32px 30px; color: var(--muted); font-size: 13px;
  border-top: 1px solid var(--line); }
"""


def _figure(src: str, size: int, caption: str, alt: str, display: int) -> str:
    shown = max(display, size)
    scaled = shown != size
    cls = ' class="px"' if scaled else ""
    text = caption + (f", shown ×{shown / size:g} (nearest neighbour)" if scaled else "")
    return (f'<figure><img{cls} src="{html.escape(urllib.parse.quote(src))}" width="{shown}" '
            f'height="{shown}" alt="{html.escape(alt)}"><figcaption>{html.escape(text)}'
            f"</figcaption></figure>")


def write_page(report_dir: str, page: Page, display: int = DISPLAY_PX) -> str:
    """Writes ``report_dir/index.html`` with its images and audio; returns its path."""
    os.makedirs(os.path.join(report_dir, AUDIO_DIR), exist_ok=True)
    os.makedirs(os.path.join(report_dir, IMAGE_DIR), exist_ok=True)
    written = set()

    def image(name: str, array: np.ndarray) -> str:
        rel = f"{IMAGE_DIR}/{name}"
        _write_png(os.path.join(report_dir, IMAGE_DIR, name), array)
        written.add(rel)
        return rel

    inputs = [label for label, _ in page.inputs]
    speech_columns = [c for c in page.columns if c.from_speech]
    other_columns = [c for c in page.columns if not c.from_speech]

    def title(c: Column) -> str:
        note = f'<span class="note">{_inline(c.note)}</span>' if c.note else ""
        return f"{html.escape(c.title)}{note}"

    # How many faces a speech input has per identity: few -> the inputs side by side (a row
    # per identity), many (e.g. an ablation's variants) -> the inputs stacked.
    faces_per_input = max([sum(len(r.faces.get((c.key, label)) or {}) for c in speech_columns)
                           for r in page.rows for label in inputs] or [0])
    stacked = page.stack_inputs if page.stack_inputs is not None else faces_per_input > 2
    group = max(1, len(speech_columns))
    gs = ' class="group-start"'
    if inputs and not stacked:
        # Two header rows: a group of columns per speech input (a column per model). Each
        # identity takes two rows: the players (one across each input's group), then the
        # faces right under them.
        head1 = ['<th rowspan="2" class="gt">Identity and photo</th>']
        head2 = []
        for label in inputs:
            head1.append(f'<th colspan="{group}" class="group group-start">Speech input: '
                         f"{html.escape(label)}</th>")
            head2 += [f'<th{gs if j == 0 else ""}>{title(c)}</th>'
                      for j, c in enumerate(speech_columns)] or [f"<th{gs}></th>"]
        head1 += [f'<th rowspan="2"{gs}>{title(c)}</th>' for c in other_columns]
        head = f"<tr>{''.join(head1)}</tr><tr>{''.join(head2)}</tr>"
    else:
        # One header row of models; each identity takes two rows per input (its player
        # across the models, then their faces).
        head = ('<tr><th class="gt">Identity and photo</th>'
                + "".join(f'<th{gs if j == 0 else ""}>{title(c)}</th>'
                          for j, c in enumerate(speech_columns))
                + "".join(f"<th{gs}>{title(c)}</th>" for c in other_columns) + "</tr>")

    def faces_cell(per_size: dict, stem: str, alt: str, extra: str = "") -> str:
        figures = [_figure(image(f"{stem}_{s}.png", per_size[s]), s, f"{s} px",
                           f"{alt}, {s} px", display) for s in sorted(per_size)]
        return (f"<td{extra}>" + ("".join(figures) or '<span class="missing">-</span>')
                + "</td>")

    def speech_cell(row: Row, label: str, tag: str) -> str:
        clip = row.clips.get(label)
        speech = [f'<div class="input">Speech input: {html.escape(label)}</div>'] \
            if stacked else []
        if clip is not None and clip.samples is not None and len(clip.samples):
            name = f"{tag}_{_file_slug(label)}.wav"
            _write_wav(os.path.join(report_dir, AUDIO_DIR, name), clip.samples,
                       clip.sample_rate)
            written.add(f"{AUDIO_DIR}/{name}")
            seconds = len(clip.samples) / clip.sample_rate
            speech.append(f'<audio controls preload="auto" src="'
                          f'{html.escape(urllib.parse.quote(AUDIO_DIR + "/" + name))}" '
                          f'title="{html.escape(row.name)}, {html.escape(label)}"></audio>')
            speech.append(f'<div class="where">{html.escape(clip.text)} '
                          f"({seconds:.2f} s of audio)</div>")
        else:
            why = (clip.unavailable if clip is not None and clip.unavailable
                   else "no speech recorded for this input")
            speech.append(f'<div class="no-audio">Audio not available: {html.escape(why)}'
                          f"</div>")
            if clip is not None and clip.text:
                speech.append(f'<div class="where">{html.escape(clip.text)}</div>')
        return (f'<td colspan="{group}" class="speech group-start">' + "".join(speech)
                + "</td>")

    def typicality_cell(row: Row) -> str:
        shown = [(c, row.typicality[c.key]) for c in page.columns if c.key in row.typicality]
        if not shown:
            return ""
        link = ('<a href="#voice-typicality">Voice typicality</a>' if page.typicality_text
                else "Voice typicality")
        lines = [f'<div class="typicality"><div class="typ-title">{link}</div>']
        for c, t in shown:
            model = f'<span class="typ-model">{html.escape(c.title)}</span> '
            if t.value is None:
                lines.append(f'<div class="typ na">{model}<span class="typ-value">not '
                             f'computed</span><span class="typ-why">{html.escape(t.unavailable)}'
                             f"</span></div>")
                continue
            hover = html.escape(f"voice_typicality {t.value:.4f}: {percent(t.value)} of the "
                                f"known voices are at least as far from the training voices")
            if t.low:
                lines.append(
                    f'<div class="typ low" data-typicality="{t.value:.6g}" title="{hover}">'
                    f'{model}<span class="typ-value">⚠ {percent(t.value)}</span>'
                    f'<span class="typ-warn">atypical voice: below {percent(t.warning_below)}; '
                    f"unlike the voices the model was trained on, so its face says little about "
                    f"it</span></div>")
            else:
                lines.append(f'<div class="typ ok" data-typicality="{t.value:.6g}" '
                             f'title="{hover}">{model}<span class="typ-value">'
                             f"{percent(t.value)}</span></div>")
        return "".join(lines) + "</div>"

    body = []
    for i, row in enumerate(page.rows):
        tag = f"r{i:02d}"
        letter = f"({chr(ord('a') + i)})" if i < 26 else f"({i + 1})"
        rows_per_identity = (2 * len(inputs) if stacked else 2) if inputs else 1
        span = f' rowspan="{rows_per_identity}"' if rows_per_identity > 1 else ""
        first = (f'<th class="identity"{span}><span class="letter">{letter}</span> '
                 f'<span class="name">{html.escape(row.name)}</span>')
        if row.ground_truth is not None:
            size = int(row.ground_truth.shape[0])
            src = image(f"{tag}_ground_truth_{size}.png", row.ground_truth)
            first += _figure(src, size, f"photo, {size} px", f"photo of {row.name}", display)
        else:
            first += '<div class="missing">no photo</div>'
        first += typicality_cell(row)
        first += "</th>"
        others = [faces_cell(row.faces.get((c.key, None)) or {}, f"{tag}_o{j}",
                             f"{c.title}, {row.name}", f"{gs}{span}")
                  for j, c in enumerate(other_columns)]

        def faces_row(label):
            cells = [faces_cell(row.faces.get((c.key, label)) or {},
                                f"{tag}_c{j}_{_file_slug(label or 'face')}",
                                f"{c.title}, {row.name}" + (f", {label}" if label else ""),
                                gs if j == 0 and label else "")
                     for j, c in enumerate(speech_columns)]
            return cells or ([f"<td{gs}></td>"] if label else [])

        if not inputs:
            trs = [[first] + faces_row(None) + others]
        elif stacked:
            trs = []
            for k, label in enumerate(inputs):
                lead = [first] if k == 0 else []
                trs.append(lead + [speech_cell(row, label, tag)] + (others if k == 0 else []))
                trs.append(faces_row(label))
        else:
            trs = [[first] + [speech_cell(row, label, tag) for label in inputs] + others,
                   [cell for label in inputs for cell in faces_row(label)]]
        classes = ["players", "faces"] * len(trs)
        body.append('<tbody class="identity">' + "".join(
            f'<tr class="{classes[k] if inputs else "faces"}">{"".join(cells)}</tr>'
            for k, cells in enumerate(trs)) + "</tbody>")

    # Files of an earlier page that this one does not use (fewer identities, other inputs).
    for sub in (AUDIO_DIR, IMAGE_DIR):
        for name in os.listdir(os.path.join(report_dir, sub)):
            if _OWNED.match(name) and f"{sub}/{name}" not in written:
                os.remove(os.path.join(report_dir, sub, name))

    facts = "".join(f"<dt>{html.escape(k)}</dt><dd>{_inline(v)}</dd>" for k, v in page.facts)
    inputs_html = "".join(f"<dt>{html.escape(k)}</dt><dd>{_inline(v)}</dd>"
                          for k, v in page.inputs)
    nav = ['<a href="#faces">Faces and speech</a>']
    if page.markdown:
        nav.append('<a href="#metrics">Metrics</a>')
    if page.notes:
        nav.append('<a href="#notes">Notes</a>')
    faces_section = ['<section id="faces"><h2>Faces and the speech they were made from</h2>']
    faces_section += [f'<p class="lead">{_inline(t)}</p>' for t in page.faces_text]
    if inputs_html:
        faces_section.append(f'<dl class="inputs">{inputs_html}</dl>')
    if page.typicality_text:
        faces_section.append('<div class="typicality-explained" id="voice-typicality">'
                             + "".join(f"<p>{_inline(t)}</p>" for t in page.typicality_text)
                             + "</div>")
    if page.rows:
        # No scrolling wrapper: the page scrolls, so the sticky column headers stay in view.
        faces_section.append('<table class="faces"><thead>' + head + "</thead>"
                             + "".join(body) + "</table>")
    else:
        faces_section.append('<p class="missing">No faces to show.</p>')
    faces_section.append("</section>")
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        # No favicon request: the page makes no request beyond its own files.
        '<link rel="icon" href="data:,">',
        f"<title>{html.escape(page.title)}</title>", f"<style>{_CSS}</style>", "</head>",
        "<body>", "<header>", f"<h1>{html.escape(page.title)}</h1>",
        f'<p class="subtitle">{_inline(page.subtitle)}</p>' if page.subtitle else "",
        f'<dl class="facts">{facts}</dl>' if facts else "", "</header>",
        "<nav>" + "".join(nav) + "</nav>", "<main>", "\n".join(faces_section)]
    if page.markdown:
        parts += ['<section id="metrics"><h2>Metrics</h2>', markdown_to_html(page.markdown, 1),
                  "</section>"]
    if page.notes:
        parts += ['<section id="notes"><h2>Notes</h2><ul>'
                  + "".join(f"<li>{_inline(n)}</li>" for n in page.notes) + "</ul></section>"]
    parts.append("</main>")
    links = " · ".join(f'<a href="{html.escape(urllib.parse.quote(path))}">'
                       f"{html.escape(text)}</a>" for text, path in page.links)
    parts += [f"<footer>Written {html.escape(time.strftime('%Y-%m-%d %H:%M:%S %z'))} by "
              "keras_sf2f/evaluation/results_page.py."
              + (f" Also in this directory: {links}." if links else "") + "</footer>",
              "</body>", "</html>"]
    path = os.path.join(report_dir, PAGE_FILE)
    files.write_text(path, "\n".join(p for p in parts if p) + "\n")
    return path


# -- voice typicality ---------------------------------------------------------------------------

def percent(x: float) -> str:
    """A share as the try-your-voice page writes it: one decimal below 10 %, else whole."""
    p = 100.0 * float(x)
    return (f"{round(p, 1):g} %" if 0.0 < p < 10.0 else f"{int(math.floor(p + 0.5))} %")


def _row_typicality(typicality, i: int) -> Typicality:
    """Identity ``i``'s ``Typicality`` from a model's ``evaluate.VoiceTypicality``."""

    if typicality.values is None:
        return Typicality(None, typicality.warning_below, "see the note above the table")
    if i >= len(typicality.values) or np.isnan(typicality.values[i]):
        return Typicality(None, typicality.warning_below, results.NO_WINDOW)
    return Typicality(float(typicality.values[i]), typicality.warning_below)


def typicality_npz(model: str, typicality, count: int) -> dict:
    """samples.npz entries of a model's ``evaluate.VoiceTypicality`` (the first ``count``
    identities' values, and what it is or why there is none as JSON), for pages built from
    samples.npz (the ablations')."""
    meta = {"warning_below": typicality.warning_below, "reason": typicality.reason,
            "info": typicality.info}
    out = {TYPICALITY_META_KEY.format(model=model): np.asarray(json.dumps(meta))}
    if typicality.values is not None:
        out[TYPICALITY_VALUES_KEY.format(model=model)] = np.asarray(
            typicality.values[:count], np.float32)
    return out


def typicality_from_npz(saved: dict, model: str):
    """The ``evaluate.VoiceTypicality`` ``typicality_npz`` stored (values of the pictured
    identities only), or None when samples.npz has none (written before it was recorded, or
    by an evaluation without it)."""

    meta = saved.get(TYPICALITY_META_KEY.format(model=model))
    if meta is None:
        return None
    meta = json.loads(str(np.asarray(meta)))
    values = saved.get(TYPICALITY_VALUES_KEY.format(model=model))
    return results.VoiceTypicality(None if values is None else np.asarray(values, np.float32),
                              float(meta["warning_below"]), meta.get("reason", ""),
                              meta.get("info") or {})


def _calibration_words(info: dict) -> str:
    calibration = info.get("calibration") or {}
    parts = []
    if calibration.get("train_leave_one_out"):
        parts.append(f"{calibration['train_leave_one_out']} training identities, each "
                     f"without its own bank entry")
    for split, count in calibration.items():
        if split not in ("train_leave_one_out", "windows_per_identity", "validation_note") \
                and count:
            parts.append(f"{count} `{split}` identities")
    return " and ".join(parts)


def typicality_text(per_model: list) -> list:
    """The paragraphs explaining the voice typicality under the photos (markdown), for
    ``per_model`` ``[(column title, evaluate.VoiceTypicality)]``; empty when there is none."""
    if not per_model:
        return []
    thresholds = sorted({t.warning_below for _, t in per_model})
    threshold = " / ".join(f"{x:g}" for x in thresholds)
    below = " / ".join(percent(x) for x in thresholds)
    above = " / ".join(f"{100 * (1 - x):g} %" for x in thresholds)
    out = [
        "**Voice typicality** (under each photo, one figure per model): how typical the "
        "identity's voice is of the voices the model was trained on, computed exactly as the "
        "model's export computes its `voice_typicality` output. The model embeds the speech of "
        "the all-windows input (its 1.25 s windows, fused by the attention fuser, or averaged "
        "and re-normalised by a model without one, as its export does) and measures how far "
        "that voice is from the nearest training identity's voice (1 − the largest cosine "
        "similarity to a bank of one embedding per training identity). The figure is a "
        "percentile among the known voices: the share of them that are at least as far from "
        "the bank. 100 % is as typical as the most typical known voice, 50 % a middling one.",
        f"**⚠ atypical voice** (red box) marks a figure below {below} (the export's "
        f"`typicality_warning_below` = {threshold}): the voice is farther from every training "
        f"identity than {above} of the known voices are. The model was trained on nothing "
        f"like it, so its face says little about this voice; read that face with care. Held-out "
        f"voices like the training ones fall below it only rarely (about {below} of them, by "
        f"construction)."]
    for title, t in per_model:
        if t.values is None:
            out.append(f"{title}: not computed: {t.reason}")
            continue
        info = t.info
        bank = (info.get("bank") or {}).get("identities", info.get("bank_identities", "?"))
        text = (f"{title}: bank of {bank} training identities"
                + (f" of `{info['data_dir']}`" if info.get("data_dir") else "")
                + f"; known voices: {info.get('calibration_identities', '?')}")
        words = _calibration_words(info)
        text += f" ({words})" if words else ""
        if info.get("windows_per_identity"):
            text += f"; each voice from at most its first {info['windows_per_identity']} windows"
        if info.get("fusion"):
            text += f"; fusion: {info['fusion']}"
        out.append(text + ".")
    return out


def typicality_section(per_model: dict, names: list) -> list:
    """report.md's voice-typicality section (markdown lines) for ``{model:
    evaluate.VoiceTypicality}`` of every identity in ``names``; empty when there is none."""
    if not per_model:
        return []
    lines = ["## Voice typicality", "",
             "How typical each identity's voice (its all-windows speech) is of the voices the "
             "model was trained on, exactly as its export's `voice_typicality` output: the "
             "share of the known voices (training identities leave-one-out, validation "
             "identities) at least as far from the training identities' embeddings. A voice "
             "below the threshold is farther from them than nearly all known voices; the face "
             "says little about it. Per identity: the results page and `metrics.json`.", "",
             "| model | identities | median | below threshold | threshold |",
             "|---|---|---|---|---|"]
    notes = []
    for model, t in per_model.items():
        if t.values is None:
            lines.append(f"| {model} | - | - | - | {t.warning_below:g} |")
            notes.append(f"- {model}: not computed: {t.reason}")
            continue
        valid = t.values[~np.isnan(t.values)]
        low = [(n, v) for n, v in zip(names, t.values) if v < t.warning_below]
        median = f"{float(np.median(valid)):.3f}" if valid.size else "-"
        lines.append(f"| {model} | {valid.size} | {median} | {len(low)} | "
                     f"{t.warning_below:g} |")
        if low:
            notes.append(f"- {model}, below {t.warning_below:g}: " + ", ".join(
                f"`{n}` ({v:.3f})" for n, v in low) + ".")
        if valid.size < len(t.values):
            notes.append(f"- {model}: {len(t.values) - valid.size} identities without a "
                         f"value ({results.NO_WINDOW}).")
    return lines + [""] + (notes + [""] if notes else [])


# -- from an evaluation -----------------------------------------------------------------------

_CHECKPOINT_NOTE = re.compile(r"^`(?P<model>[^`]+)`(?: \([^)]*\))?: checkpoint `(?P<prefix>[^`]+)`"
                              r" \(step (?P<step>\d+)\)")


def checkpoints_from_notes(notes) -> dict:
    """``{model: (checkpoint prefix, step)}`` from the report notes trainers/evaluate.py and the
    ablation runner write (``"`SF2F`: checkpoint `<prefix>` (step N)."``)."""
    out = {}
    for note in notes or ():
        match = _CHECKPOINT_NOTE.match(str(note))
        if match:
            out[match["model"]] = (match["prefix"], int(match["step"]))
    return out


def _input_description(label: str, config, fuser_models: list) -> str:
    from keras_sf2f.evaluation.speech_audio import ALL_WINDOWS  # noqa: PLC0415

    if label == ALL_WINDOWS:
        return (f"every 1.25 s window (125 frames) of the identity's utterances, each utterance "
                f"from its start, at most {config.max_windows}; encoded one by one and fused "
                f"by the attention fuser (averaged by a model without one); one run. The "
                f"player plays the windows in order.")
    seconds = float(label.split()[0])
    frames = int(round(seconds * 100))
    text = (f"{frames} frames from a random place in the identity's speech (its utterances "
            f"joined, after voice activity detection): the first of the {config.runs} crops "
            f"the metrics average over (seed {config.seed}).")
    if fuser_models and frames >= 125:
        windows, rest = divmod(frames, 125)
        text += (f" {', '.join(fuser_models)}: {windows} window{'s' if windows > 1 else ''} "
                 f"of 1.25 s through the fuser" + (f" (the last {rest} frames unused)"
                                                   if rest else "") + ".")
    return text


def _data_text(config, evaluator) -> str:
    from keras_sf2f.evaluation import oracle  # noqa: PLC0415

    split = evaluator.split
    source = oracle.procedural_source(config.data_dir)
    kind = f"embedded procedural corpus, seed {source['seed']}" if source else "prepared data"
    return (f"split `{config.split}` of `{config.data_dir}` ({kind}): "
            f"{split.num_identities} identities, {split.num_faces} face images")


def _uint8(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    return normalized_to_uint8_np(images)


def _clips(config, table, count: int, data_dir: str | None = None) -> tuple:
    """``(clips per identity, note)``: the speech of the first ``count`` identities; an
    unexpected failure leaves the page without audio (and says so) rather than without a
    report."""
    from keras_sf2f.evaluation import speech_audio  # noqa: PLC0415
    try:
        return speech_audio.evaluation_clips(config, table, range(count), data_dir), None
    except Exception as e:  # noqa: BLE001 - the page must not cost the report
        logging.exception("results page: no audio")
        return [], f"No audio on this page: {type(e).__name__}: {e}"


def write_evaluation_page(report_dir: str, config, evaluator, samples_by_model: dict,
                          markdown: list, notes: list, figure_columns: list | None = None,
                          links: list | None = None, checkpoints: dict | None = None) -> str:
    """The page of one evaluation (``evaluate.write_report``'s arguments): models in the order
    of ``samples_by_model``, titled as in ``figure_columns`` (``[(title, model or None, why
    missing)]``); ``markdown`` the report's metric sections; ``checkpoints`` ``{model:
    (prefix, step)}`` (default: read from the notes)."""
    from keras_sf2f.evaluation.speech_audio import ALL_WINDOWS  # noqa: PLC0415

    n = min(config.grid_identities, evaluator.split.num_identities)
    names = list(evaluator.split.names)
    titles = {m: t for t, m, _ in (figure_columns or []) if m is not None}
    missing = [(t, why) for t, m, why in (figure_columns or []) if m not in samples_by_model]
    checkpoints = checkpoints if checkpoints is not None else checkpoints_from_notes(notes)

    labels = []
    for samples in samples_by_model.values():
        labels += [k for k in samples if k not in labels]
    speech_labels = [f"{d:g} s" for d in config.durations] + (
        [ALL_WINDOWS] if config.fuser_protocol else [])
    inputs = [label for label in speech_labels if label in labels]
    columns, fuser_titles = [], []
    for model, samples in samples_by_model.items():
        title = titles.get(model, model)
        from_speech = any(label in samples for label in inputs)
        if model == results.ORACLE_MODEL:
            # No speech: a column per kind of oracle face (oracle.py), keyed by its protocol.
            for label in samples:
                columns.append(Column(_oracle_key(model, label), f"{title}: {label}",
                                      _oracle_note(label), from_speech=False))
            continue
        if getattr(samples, "has_fuser", False):
            note = "with its attention fuser"
            fuser_titles.append(title)
        else:
            note = "no fuser: a crop is encoded whole"
        if model in checkpoints:
            note += f"; step {checkpoints[model][1]}"
        columns.append(Column(model, title, note, from_speech))

    clips, audio_note = _clips(config, evaluator.split, n) if inputs else ([], None)
    ground_truth = _uint8(evaluator.faces[evaluator.first_faces[:n]])
    typicality = {m: s.typicality for m, s in samples_by_model.items()
                  if getattr(s, "typicality", None) is not None}
    rows = []
    for i in range(n):
        row = Row(names[i], ground_truth[i], clips[i] if i < len(clips) else {})
        for model, samples in samples_by_model.items():
            for label in samples:
                key = ((_oracle_key(model, label), None) if model == results.ORACLE_MODEL
                       else (model, label if label in inputs else None))
                per_size = results.sample_resolutions(samples, label, n)
                row.faces[key] = {s: _uint8(x[i:i + 1])[0] for s, x in per_size.items()}
        row.typicality = {m: _row_typicality(t, i) for m, t in typicality.items()}
        rows.append(row)

    models = [f"{titles.get(m, m)}: checkpoint `{checkpoints[m][0]}`, step {checkpoints[m][1]}"
              if m in checkpoints else titles.get(m, m) for m in samples_by_model]
    facts = [("Data", _data_text(config, evaluator)),
             ("Models", "; ".join(models) or "none"),
             ("Protocol", f"{config.runs} runs of one random crop per identity and duration "
                          f"(seed {config.seed}); tables give mean ± standard deviation over "
                          f"runs"),
             ("Shown", f"the first {n} of {evaluator.split.num_identities} identities (label "
                       f"order), the faces of run 0")]
    sizes = sorted({s for r in rows for per in r.faces.values() for s in per})
    small = [str(s) for s in sizes if s < DISPLAY_PX]
    faces_text = [
        "Each row is a held-out identity: its photo, then per speech input a player with "
        "exactly the speech the faces beside it were made from (the samples the model's "
        "log-mel frames were computed from), and each model's face at every resolution it "
        "draws." + (f" {', '.join(small)} px faces are shown at {DISPLAY_PX} px, enlarged "
                    f"nearest-neighbour (each pixel a block, nothing smoothed); captions give "
                    f"the real size." if small else "")
        + (" Not shown: " + "; ".join(f"no {t} column: {why}" for t, why in missing) + "."
           if missing else "")]
    if audio_note:
        faces_text.append(audio_note)
    page = Page(
        title="Speech to face: faces from held-out voices",
        subtitle=" · ".join(titles.get(m, m) for m in samples_by_model)
        + f" — split `{config.split}`",
        facts=facts,
        inputs=[(label, _input_description(label, config, fuser_titles)) for label in inputs],
        columns=columns, rows=rows, faces_text=faces_text, markdown=markdown,
        notes=list(notes or []), links=links or [],
        typicality_text=typicality_text([(titles.get(m, m), t) for m, t in typicality.items()]))
    return write_page(report_dir, page)


# -- from the ablation runner -----------------------------------------------------------------

def npz_resolutions(saved: dict, model: str, label: str) -> dict:
    """``{size: uint8 faces}`` of one model and protocol in a samples.npz (``write_report``):
    the largest under ``<model>|<label>``, lower ones under ``RESOLUTION_KEY``."""
    out = {}
    prefix = f"resolution|{model}|{label}|"
    for key, value in saved.items():
        if key.startswith(prefix):
            out[int(key[len(prefix):])] = np.asarray(value)
    main = saved.get(f"{model}|{label}")
    if main is not None:
        out[int(main.shape[1])] = np.asarray(main)
    return dict(sorted(out.items()))


def write_ablation_page(output_dir: str, config, table, variants: list, saved: dict,
                        markdown: list, facts: list, notes: list | None = None,
                        links: list | None = None) -> str:
    """The ablations' page: one column per variant with samples.

    Args:
      config: the ``evaluate.EvaluationConfig`` every variant was evaluated with.
      table: the evaluation split (``table.load_split``), for the speech; ``None``: no audio.
      variants: ``[(name, title, has_fuser)]`` in column order.
      saved: ``{name: samples.npz contents}`` of the variants that have them.
    """
    from keras_sf2f.evaluation.speech_audio import ALL_WINDOWS  # noqa: PLC0415

    shown = [v for v in variants if v[0] in saved]
    first = saved[shown[0][0]] if shown else None
    names = [str(x) for x in first["names"]] if first is not None else []
    n = len(names)
    speech_labels = [f"{d:g} s" for d in config.durations] + (
        [ALL_WINDOWS] if config.fuser_protocol else [])
    present = {k.split("|", 1)[1] for _, s in saved.items() for k in s
               if "|" in k and not k.startswith(("resolution|", "typicality"))}
    inputs = [label for label in speech_labels if label in present]
    if table is not None and inputs:
        clips, audio_note = _clips(config, table, n)
    else:
        clips, audio_note = [], ("No audio on this page: the evaluation split could not be "
                                 "loaded." if inputs and n else None)
    columns = [Column(name, title, "with its attention fuser" if fuser else "")
               for name, title, fuser in shown]
    # Each variant's voice typicality as its evaluation recorded it in samples.npz.
    typicality = {name: typicality_from_npz(saved[name], name) for name, _, _ in shown}
    not_recorded = ("not recorded: its samples.npz was written without voice typicality "
                    "(evaluated before it existed, or with it switched off)")
    no_typicality_note = ""
    if any(t is not None for t in typicality.values()):
        from keras_sf2f.serving.inference import (  # noqa: PLC0415
            DEFAULT_TYPICALITY_WARNING_BELOW)
        typicality = {name: t if t is not None else results.VoiceTypicality(
            None, DEFAULT_TYPICALITY_WARNING_BELOW, not_recorded)
            for name, t in typicality.items()}
    else:
        typicality = {}
        if shown:
            no_typicality_note = ("No voice typicality on this page: no variant's "
                                  "samples.npz records it (evaluated before it existed, or "
                                  "with it switched off).")
    rows = []
    for i in range(n):
        row = Row(names[i], np.asarray(first["ground_truth"][i]),
                  clips[i] if i < len(clips) else {})
        for name, _, _ in shown:
            for label in inputs:
                per_size = npz_resolutions(saved[name], name, label)
                row.faces[(name, label)] = {s: x[i] for s, x in per_size.items()
                                            if i < len(x)}
        row.typicality = {m: _row_typicality(t, i) for m, t in typicality.items()}
        rows.append(row)
    sizes = sorted({s for r in rows for per in r.faces.values() for s in per})
    faces_text = [
        "One column per variant; each row a held-out identity with the speech every "
        "variant's face in that row was made from (all variants share the evaluation's "
        "crops)."]
    if sizes and sizes[0] < DISPLAY_PX:
        faces_text.append(f"Faces smaller than {DISPLAY_PX} px are shown at {DISPLAY_PX} px "
                          f"with nearest-neighbour upscaling; captions give the real size.")
    if audio_note:
        faces_text.append(audio_note)
    if no_typicality_note:
        faces_text.append(no_typicality_note)
    page = Page(title="Ablations: faces of every variant from the same speech",
                subtitle=f"split `{config.split}` of `{config.data_dir}`", facts=facts,
                inputs=[(label, _input_description(
                    label, config, [t for _, t, f in shown if f])) for label in inputs],
                columns=columns, rows=rows, faces_text=faces_text, markdown=markdown,
                notes=list(notes or []), links=links or [],
                typicality_text=typicality_text([(title, typicality[name])
                                                 for name, title, _ in shown
                                                 if name in typicality]))
    return write_page(output_dir, page)
