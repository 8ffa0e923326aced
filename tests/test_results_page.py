"""The results page (keras_sf2f/evaluation/results_page.py) and the speech behind its faces
(keras_sf2f/evaluation/speech_audio.py).

* the page writer on synthetic inputs: every referenced file exists, text is escaped, missing
  audio is said, small faces are enlarged nearest-neighbour and captioned so;
* the audio of the embedded corpus is exactly the speech the evaluation cropped: the log-mel
  of each written WAV piece equals the evaluation's frames (float16 storage aside);
* VoxCeleb preparation records each utterance's source file and the page plays it; data
  without it (older preparations, mel pickles, a moved root) says "audio not available";
* the page of a real (tiny) evaluation in headless Chromium: no console errors, every image
  decodes, every audio element can play;
* voice typicality: each shown identity's figure per model is the exported model's
  ``voice_typicality`` (the serving functions' predict_mel on its windows), a planted
  atypical voice (white noise) gets the warning from a model with and one without a fuser,
  data without training identities says so, the ablation page shows each variant's figures.

A miniature procedural corpus (16 training, 2 validation and 3 test identities, 2 real
utterances each) and a tiny generator drawing 64 and 128 px faces with an attention fuser
keep it fast.
"""

import json
import os
import re
import shutil
import urllib.parse
import wave

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
from PIL import Image  # noqa: E402

from keras_sf2f.audio import features  # noqa: E402
from keras_sf2f.data import pipelines, prepare, procedural, records, table  # noqa: E402
from keras_sf2f.data.corpus.face import draw_face  # noqa: E402
from keras_sf2f.image_ranges import normalized_to_uint8_np  # noqa: E402
from keras_sf2f.data.prepare import DatasetWriter  # noqa: E402
from keras_sf2f.evaluation import evaluate as ev  # noqa: E402
from keras_sf2f.evaluation.results import ORACLE_MODEL  # noqa: E402
from keras_sf2f.evaluation import results_page, speech_audio  # noqa: E402
from keras_sf2f.evaluation.speech_audio import Piece, SpeechClip  # noqa: E402

from browser import headless_chromium, requires_chromium  # noqa: E402


SEED = 0
TRAIN = (0, 16)    # speech only: the typicality bank and calibration
VAL = (400, 402)
TEST = (450, 453)
FACEID = (500, 502)
# A planted atypical voice: white noise through the preparation's own feature path.
NOISE = "noise_voice"
TINY = dict(encoder="cnn", encoder_channels=(8, 8, 8, 8), embedding_dim=32,
            image_discriminator_arch_64="", identity_classifier_arch_64="")


def _references(page_html: str) -> list:
    return [urllib.parse.unquote(u) for u in re.findall(r'(?:src|href)="([^"#][^"]*)"',
                                                         page_html)
            if not u.startswith("data:")]


def _read_wav(path):
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth()) == (1, 2)  # mono 16-bit PCM
        return np.frombuffer(w.readframes(w.getnframes()), "<i2"), w.getframerate()


# -- the writer on synthetic inputs ------------------------------------------------------------

def test_page_writer_files_escaping_and_missing_audio(tmp_path):
    rng = np.random.default_rng(0)
    face = lambda s: rng.integers(0, 255, size=(s, s, 3), dtype=np.uint8)  # noqa: E731
    speech = (rng.standard_normal(8000) * 3000).astype(np.int16)
    evil = '<script>alert("x")</script> & Co'
    rows = [
        results_page.Row(evil, face(64), {
            "1.25 s": SpeechClip("1.25 s", [Piece(0, 0, 50)], 50, samples=speech,
                                 text="u00 0.00–0.50 s"),
            "all windows": SpeechClip("all windows", [], 0,
                                      unavailable="the file <b>x.wav</b> is gone")},
            {("m<1>", "1.25 s"): {64: face(64), 128: face(128)},
             ("m<1>", "all windows"): {64: face(64)}, ("oracle", None): {64: face(64)}}),
        results_page.Row("second", face(64), {}, {("m<1>", "1.25 s"): {64: face(64)}}),
    ]
    page = results_page.Page(
        title="T <1>", subtitle="split `test`", facts=[("Data", "`/d<x>` & more")],
        inputs=[("1.25 s", "a crop"), ("all windows", "windows")],
        columns=[results_page.Column("m<1>", "Model <1>", "with fuser"),
                 results_page.Column("oracle", "Oracle", "no speech", from_speech=False)],
        rows=rows, markdown=["## Embedder: e", "", "| model | r@1 |", "|---|---|",
                             "| A<b> | 0.5 ± 0.1 |", "", "![x](faces.png)",
                             "- see [report](report.md) and [web](https://example.com)"],
        notes=["`SF2F`: checkpoint `ck` (step 3)."], links=[("report.md", "report.md")])
    # A stale file from an earlier, larger page goes; foreign files stay.
    os.makedirs(tmp_path / "audio")
    (tmp_path / "audio" / "r07_5_s.wav").write_bytes(b"old")
    (tmp_path / "audio" / "mine.txt").write_text("keep")
    path = results_page.write_page(str(tmp_path), page)
    text = open(path, encoding="utf-8").read()

    assert not (tmp_path / "audio" / "r07_5_s.wav").exists()
    assert (tmp_path / "audio" / "mine.txt").exists()
    refs = _references(text)
    assert refs and all((tmp_path / r).is_file() for r in refs if r != "report.md")
    assert "<script>" not in text and "&lt;script&gt;alert(&quot;x&quot;)" in text
    assert "Model &lt;1&gt;" in text and "<code>/d&lt;x&gt;</code> &amp; more" in text
    assert "Audio not available: the file &lt;b&gt;x.wav&lt;/b&gt; is gone" in text
    assert text.count("Audio not available") == 3  # 1 in row 1, both inputs of row 2
    assert text.count("<audio ") == 1
    samples, rate = _read_wav(tmp_path / [r for r in refs if r.endswith(".wav")][0])
    assert rate == 16000 and np.array_equal(samples, speech)
    # 64 px faces enlarged to 128 px, pixelated, and the caption says so; 128 px as is.
    assert 'class="px"' in text and "64 px, shown ×2 (nearest neighbour)" in text
    assert re.search(r'<img src="images/r00_c0_1.25_s_128.png" width="128"', text)
    for r in refs:
        if r.endswith(".png"):
            assert Image.open(tmp_path / r).size[0] in (64, 128)
    # The markdown: a table with a numeric cell, no image, only relative links.
    assert '<td class="num">0.5 ± 0.1</td>' in text and "A&lt;b&gt;" in text
    assert "faces.png" not in text.split('id="metrics"')[1].split("</section>")[0]
    assert '<a href="report.md">report</a>' in text and "example.com\"" not in text
    assert results_page.checkpoints_from_notes(page.notes) == {"SF2F": ("ck", 3)}


def test_typicality_figures_under_the_photo(tmp_path):
    """Each model's figure under the photo, in column order: a percentile as the
    try-your-voice page writes it, a warning (words and colour) below the threshold, why there
    is none; escaped."""
    Typicality = results_page.Typicality
    rows = [results_page.Row("a", None, typicality={"m": Typicality(0.004, 0.05)}),
            results_page.Row("b", None, typicality={"o": Typicality(None, 0.05, "no <b>win"),
                                                    "m": Typicality(0.5, 0.05)}),
            results_page.Row("c", None)]
    page = results_page.Page(
        "t", columns=[results_page.Column("m", "Model <1>"),
                      results_page.Column("o", "Other", from_speech=False)],
        rows=rows, typicality_text=["**Voice typicality** <x>"])
    text = open(results_page.write_page(str(tmp_path), page), encoding="utf-8").read()
    rows = dict(_typicality_rows(text))
    assert rows["a"] == [("Model &lt;1&gt;", "low", 0.004, rows["a"][0][3])]
    assert "⚠ 0.4 %" in rows["a"][0][3] and "atypical voice: below 5 %" in rows["a"][0][3]
    assert [(t, c, v) for t, c, v, _ in rows["b"]] == [("Model &lt;1&gt;", "ok", 0.5),
                                                       ("Other", "na", None)]
    assert "50 %" in rows["b"][0][3] and "no &lt;b&gt;win" in rows["b"][1][3]
    assert rows["c"] == [] and text.count('class="typicality"') == 2
    assert "<p><strong>Voice typicality</strong> &lt;x&gt;</p>" in text
    assert text.count('<a href="#voice-typicality">Voice typicality</a>') == 2
    assert 'title="voice_typicality 0.0040: 0.4 % of the known voices are at least as far' in text
    assert [results_page.percent(x) for x in (0, 0.004, 0.05, 0.0999, 0.625, 1)] == \
        ["0 %", "0.4 %", "5 %", "10 %", "63 %", "100 %"]


def test_markdown_subset():
    out = results_page.markdown_to_html(
        ["# Top", "para one", "continues **bold `c`**", "", "- a", "- b", "",
         "| h1 | h2 |", "|---|---|", "| x | 1.000 |"])
    assert out.startswith('<h2 id="top">Top</h2>')
    assert "<p>para one continues <strong>bold <code>c</code></strong></p>" in out
    assert "<ul><li>a</li><li>b</li></ul>" in out
    assert "<th>h1</th>" in out and '<td class="num">1.000</td>' in out


# -- frames to samples --------------------------------------------------------------------------

class _Table:
    """What speech_audio reads of a SplitTable."""

    def __init__(self, lengths_per_identity):
        lengths = [n for per in lengths_per_identity for n in per]
        self.utt_length = np.asarray(lengths)
        self.utt_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        counts = [len(per) for per in lengths_per_identity]
        self.id_utt_count = np.asarray(counts)
        self.id_utt_first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self.utterance_ids = [f"u{k}" for k in range(len(lengths))]


def test_crop_and_window_pieces():
    t = _Table([[300, 260, 90], [400]])
    assert speech_audio.crop_pieces(t, 0, 250, 125) == ([Piece(0, 250, 50), Piece(1, 0, 75)],
                                                         0)
    assert speech_audio.crop_pieces(t, 0, 0, 700) == (
        [Piece(0, 0, 300), Piece(1, 0, 260), Piece(2, 0, 90)], 50)
    assert speech_audio.crop_pieces(t, 1, 0, 500) == ([Piece(3, 0, 400)], 100)
    # 300 -> 2 windows, 260 -> 2, 90 -> none; at most 3.
    assert speech_audio.window_pieces(t, 0, 20) == [Piece(0, 0, 250), Piece(1, 0, 250)]
    assert speech_audio.window_pieces(t, 0, 3) == [Piece(0, 0, 250), Piece(1, 0, 125)]
    # Frames [a, b) come from samples [160 a, 160 (b - 1) + 400), clipped to the end.
    assert speech_audio.sample_range(Piece(0, 10, 125), 10 ** 6) == (1600, 1600 + 124 * 160
                                                                     + 400)
    assert speech_audio.sample_range(Piece(0, 290, 10), 48100) == (46400, 48100)


# -- a tiny evaluation on the embedded corpus ---------------------------------------------------

def _procedural_dir(directory, speech_splits=("train", "val"), noise=False):
    """Test (with faces and speech) and faceid (faces) identities of the corpus; the splits in
    ``speech_splits`` (speech only); ``noise``: one more test identity whose speech is white
    noise (its audio is not regenerable, its voice unlike any)."""
    ranges = {"train": TRAIN, "val": VAL, "test": TEST, "faceid": FACEID}
    splits = {k: ranges[k] for k in (*speech_splits, "test", "faceid")}
    names = {k: [procedural.identity_name(i) for i in range(*r)] for k, r in splits.items()}
    if noise:
        names["test"].append(NOISE)
    source = {"kind": "procedural", "seed": SEED,
              "ranges": {"train": [0, 400], "test": list(TEST), "faceid": list(FACEID)},
              "spec": {"face_quality": "aligned", "sample_rate": 16000}}
    writer = DatasetWriter(directory, names, utterance_shards=1, source=source)
    for split, (lo, hi) in splits.items():
        for identity in range(lo, hi):
            name = procedural.identity_name(identity)
            if split != "faceid":  # the preparation's own path: synthesis, VAD, features
                for item in range(2):
                    speech = procedural.utterance_speech(SEED, identity, item, 16000)
                    writer.add_utterance(name, procedural.utterance_id(name, item),
                                         prepare._speech_to_normalised_mel(speech, name, 100))
            if split in ("test", "faceid"):
                for k in range(2):
                    writer.add_face(name, f"{name}_f{k}", procedural.face_pngs(
                        draw_face(SEED, identity, k, 128), records.IMAGE_SIZES))
    if noise:
        rng = np.random.default_rng(3)
        for item in range(2):
            writer.add_utterance(NOISE, f"{NOISE}_u{item}", prepare._speech_to_normalised_mel(
                rng.normal(0, 3000, 3 * 16000), NOISE, 100))
        for k in range(2):
            writer.add_face(NOISE, f"{NOISE}_f{k}", procedural.face_pngs(
                draw_face(SEED, TEST[1], k, 128), records.IMAGE_SIZES))
    writer.close()
    return directory


def _tiny_embedder():
    from keras_sf2f.evaluation.embedders import FaceNetEmbedder
    from keras_sf2f.models.facenet import FaceNet

    model = FaceNet(embedding_dim=16, width_multiplier=0.0625, repeats=(1, 1, 1),
                    dropout_rate=0.0)
    model.build((None, 140, 140, 3))
    return FaceNetEmbedder(model, name="face_identity_net")


def _tiny_generator(seed=1, fuser="attention"):
    import keras

    from keras_sf2f.models import builder

    keras.utils.set_random_seed(seed)
    return builder.build_generator(builder.ModelConfig(
        **TINY, decoder="upconv_multires", image_size=128, fuser=fuser))


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    """A 128 px generator that also draws 64 px, with an attention fuser, and the oracle,
    evaluated (2 runs) and reported into report_dir."""
    data_dir = _procedural_dir(str(tmp_path_factory.mktemp("corpus")))
    config = ev.EvaluationConfig(data_dir=data_dir, runs=2, durations=(1.25, 5.0))
    evaluator = ev.Evaluator(config, [_tiny_embedder()], 128)
    generator = _tiny_generator()
    out = evaluator.evaluate(ev.FaceGenerator(generator, 8))
    oracle = evaluator.oracle()
    results = {"SF2F": out["results"], ORACLE_MODEL: oracle["results"]}
    samples = {"SF2F": out["samples"], ORACLE_MODEL: oracle["samples"]}
    report_dir = str(tmp_path_factory.mktemp("report"))
    notes = ["`SF2F`: checkpoint `/ckpt/ckpt-7` (step 7)."]
    ev.write_report(report_dir, config, evaluator, results, samples, notes, figure_columns=[
        ("SF2F", "SF2F", None), ("voice2face", None, "no --baseline_checkpoint_dir given")])
    return config, evaluator, out, report_dir, generator


def test_evaluation_page_shows_every_identity_input_model_and_resolution(evaluation):
    config, evaluator, out, report_dir, _ = evaluation
    text = open(os.path.join(report_dir, "index.html"), encoding="utf-8").read()
    refs = _references(text)
    assert all(os.path.isfile(os.path.join(report_dir, r)) for r in refs)
    assert out["samples"].has_fuser and set(out["samples"].resolutions["5 s"]) == {64}
    for i, name in enumerate(evaluator.split.names):
        assert name in text
        for label in ("1.25_s", "5_s", "all_windows"):
            assert f"audio/r{i:02d}_{label}.wav" in refs
            for size in (64, 128):
                assert f"images/r{i:02d}_c0_{label}_{size}.png" in refs
        for j in range(3):  # the oracle's three kinds of faces, once per identity
            assert f"images/r{i:02d}_o{j}_128.png" in refs
    # The 128 px face on the page is the scored one; the 64 px one comes from the same pass.
    page_face = np.asarray(Image.open(os.path.join(report_dir, "images", "r01_c0_5_s_128.png")))
    np.testing.assert_array_equal(page_face, normalized_to_uint8_np(out["samples"]["5 s"][1:2])[0])
    saved = np.load(os.path.join(report_dir, "samples.npz"))
    np.testing.assert_array_equal(
        np.asarray(Image.open(os.path.join(report_dir, "images", "r01_c0_5_s_64.png"))),
        saved["resolution|SF2F|5 s|64"][1])
    assert "Audio not available" not in text
    assert "no voice2face column: no --baseline_checkpoint_dir given" in text
    assert "checkpoint <code>/ckpt/ckpt-7</code>, step 7" in text
    assert "with its attention fuser" in text and "64 px, shown ×2 (nearest neighbour)" in text
    # The report's own tables, not recomputed.
    md = open(os.path.join(report_dir, "report.md"), encoding="utf-8").read()
    row = next(line for line in md.splitlines() if line.startswith("| SF2F | crops_5s |"))
    cells = [c.strip() for c in row.strip("|").split("|")][2:]
    assert all(f"<td class=\"num\">{c}</td>" in text for c in cells)
    assert "[index.html](index.html)" in md


def _check_pieces(clip, samples, used):
    """The log-mel of each piece of ``samples`` against the frames the model used: same frame
    counts; equal up to float16 storage except a piece's first frame when it starts inside an
    utterance (the pre-emphasis of its first sample used the sample before the cut)."""
    assert len(clip.piece_samples) == len(clip.pieces)
    position, frame = 0, 0
    for piece, length in zip(clip.pieces, clip.piece_samples):
        cut = samples[position:position + length].astype(np.float64)
        mel = features.normalize_log_mel(features.log_mel_filterbank(cut, 16000).numpy())
        assert mel.shape[0] == piece.frames
        skip = 1 if piece.first_frame > 0 else 0
        np.testing.assert_allclose(mel[skip:], used[frame + skip:frame + piece.frames],
                                   atol=5e-3)
        position += length
        frame += piece.frames
    assert position == len(samples) and frame == len(used)
    return frame


def test_corpus_audio_is_the_speech_the_evaluation_cropped(evaluation):
    """The written WAVs are the regenerated speech of the crops run 0 used and of all
    windows; their log-mel, piece by piece, is the evaluation's input."""
    config, evaluator, _, report_dir, _ = evaluation
    clips = speech_audio.evaluation_clips(config, evaluator.split,
                                          range(evaluator.split.num_identities))
    checked = 0
    for i, per_input in enumerate(clips):
        windows, mask = pipelines.identity_windows(evaluator.split, np.int64(i),
                                                   max_windows=config.max_windows)
        for label, clip in per_input.items():
            samples, rate = _read_wav(os.path.join(
                report_dir, "audio", f"r{i:02d}_{label.replace(' ', '_')}.wav"))
            assert rate == 16000 and np.array_equal(samples, clip.samples)
            if label == "all windows":
                used = windows.numpy()[mask.numpy()].reshape(-1, 40)
            else:
                used = evaluator.crops[float(label.split()[0])][i, 0]
                assert clip.frames == len(used)
                used = used[:len(used) - clip.padded_frames]
            checked += _check_pieces(clip, samples, used)
    assert checked > 3 * (125 + 400)


def _ablation_page(evaluation, tmp_path, without_typicality=()) -> str:
    """ablations.write_tables' page for two variants sharing the tiny evaluation's faces under
    their own names (``without_typicality``: variants whose samples.npz lack it, as written
    before it was recorded)."""
    from keras_sf2f.evaluation import ablations

    config, _, out, report_dir, _ = evaluation
    saved = dict(np.load(os.path.join(report_dir, "samples.npz")))
    for name in ("sf2f", "sf2f_fuser"):
        renamed = {k.replace("SF2F", name): v for k, v in saved.items()
                   if not (name in without_typicality and k.startswith("typicality"))}
        os.makedirs(tmp_path / "variants" / name / "report")
        np.savez(tmp_path / "variants" / name / "report" / "samples.npz", **renamed)
    plan = ablations.Plan(output_dir=str(tmp_path), data_dir=config.data_dir,
                          face_network="/f", base_config="base.cfg", fuser_config="f.cfg",
                          voice2face_config="v.cfg", fuser_steps=1, eval_runs=config.runs,
                          eval_durations=config.durations)
    chosen = ablations.select(ablations.variants(32), ["sf2f_fuser"])
    results = {v.name: out["results"] for v in chosen}
    ablations.write_tables(plan, chosen, results, {}, {}, ["face_identity_net"], 1.0)
    return (tmp_path / "index.html").read_text(encoding="utf-8")


def test_ablation_page_has_a_column_per_variant(evaluation, tmp_path):
    """ablations.write_tables writes the same page for its variants, from their samples.npz
    (here two variants sharing the tiny evaluation's faces under their own names), with
    each variant's voice typicality under the photos."""
    _, evaluator, out, _, _ = evaluation
    text = _ablation_page(evaluation, tmp_path)
    refs = _references(text)
    # (The variants table links each variant's report.md, not written in this test.)
    assert all((tmp_path / r).is_file() for r in refs if "variants/" not in r)
    assert re.search(r"<th[^>]*>SF2F \(full\)", text) and re.search(r"<th[^>]*>SF2F \+ fuser",
                                                                      text)
    assert "Speech input: 5 s</div>" in text  # 4 faces per input: the inputs are stacked
    for i in range(len(evaluator.split.names)):
        for column in (0, 1):
            assert f"images/r{i:02d}_c{column}_5_s_64.png" in refs
        assert f"audio/r{i:02d}_all_windows.wav" in refs
    assert "Table 2 (ablations)" in text and "Audio not available" not in text
    assert "figure1_5s.png" in refs  # linked, not inlined
    values = out["samples"].typicality.values
    rows = _typicality_rows(text)
    assert [name for name, _ in rows] == list(evaluator.split.names)
    for i, (_, cells) in enumerate(rows):
        assert [title for title, *_ in cells] == ["SF2F (full)", "SF2F + fuser"]
        assert all(value == pytest.approx(values[i], abs=1e-6) for _, _, value, _ in cells)
    assert 'id="voice-typicality"' in text and "bank of 16 training identities" in text


def test_ablation_page_without_recorded_typicality(evaluation, tmp_path):
    """A variant whose samples.npz predates voice typicality: the page says so for it and
    still shows the other's; none recorded at all: one sentence, no figures."""
    _, evaluator, out, _, _ = evaluation
    text = _ablation_page(evaluation, tmp_path / "one", without_typicality=("sf2f",))
    for _, cells in _typicality_rows(text):
        (full, cls, value, why), fuser = cells
        assert (full, cls, value) == ("SF2F (full)", "na", None)
        assert "see the note above the table" in why
        assert fuser[0] == "SF2F + fuser" and fuser[1] in ("ok", "low")
    assert "SF2F (full): not computed: not recorded: its samples.npz was written without " \
           "voice typicality" in text
    text = _ablation_page(evaluation, tmp_path / "none",
                          without_typicality=("sf2f", "sf2f_fuser"))
    assert 'class="typicality"' not in text and 'id="voice-typicality"' not in text
    assert "No voice typicality on this page: no variant&#x27;s samples.npz records it" in text


# -- voice typicality ---------------------------------------------------------------------------

_ROW = re.compile(r'<tbody class="identity">.*?</tbody>', re.S)
_TYP = re.compile(r'<div class="typ (ok|low|na)"(?: data-typicality="([^"]+)")?[^>]*>'
                  r'<span class="typ-model">([^<]*)</span>(.*?)</div>', re.S)


def _typicality_rows(text: str) -> list:
    """``[(identity name, [(model title, "ok" | "low" | "na", value or None, text)])]`` of
    the page's rows, from the HTML."""
    rows = []
    for body in _ROW.findall(text):
        name = re.search(r'<span class="name">([^<]*)</span>', body).group(1)
        cells = [(title, cls, float(value) if value else None,
                  re.sub(r"<[^>]+>", " ", rest))
                 for cls, value, title, rest in _TYP.findall(body)]
        rows.append((name, cells))
    return rows


def _export_typicality(generator, config, split) -> np.ndarray:
    """Each identity's voice_typicality from the serving functions an export traces
    (predict_mel on its first windows), calibrated as the export calibrates."""
    import tensorflow as tf

    from keras_sf2f.serving import savedmodel
    from keras_sf2f.serving.inference import TYPICALITY_OUTPUT, FaceFromVoice, ServingConfig

    serving = ServingConfig(max_windows=config.max_windows)
    reference = savedmodel.typicality_reference(generator, config.data_dir, serving)
    predict_mel = FaceFromVoice(generator, serving, reference).function("predict_mel")
    out = []
    for i in range(split.num_identities):
        windows, valid = pipelines.identity_windows(split, tf.constant(i, tf.int64),
                                                    max_windows=serving.window_capacity)
        log_mel = windows.numpy()[valid.numpy()][None]
        out.append(float(predict_mel(tf.constant(log_mel))[TYPICALITY_OUTPUT][0]))
    return np.asarray(out)


def test_evaluation_page_shows_each_identitys_voice_typicality(evaluation):
    config, evaluator, out, report_dir, generator = evaluation
    typicality = out["samples"].typicality
    names = list(evaluator.split.names)
    assert typicality.values is not None and typicality.values.shape == (len(names),)
    assert typicality.warning_below == 0.05
    # The export's own numbers: same bank, calibration and embedding of the speech.
    np.testing.assert_allclose(typicality.values, _export_typicality(
        generator, config, evaluator.split), atol=1e-6)
    assert typicality.info["bank"]["identities"] == 16
    assert typicality.info["calibration_identities"] == 16 + 2  # leave-one-out + val
    assert typicality.info["fusion"].startswith("attention fuser")

    text = open(os.path.join(report_dir, "index.html"), encoding="utf-8").read()
    rows = _typicality_rows(text)
    assert [name for name, _ in rows] == names
    for i, (_, cells) in enumerate(rows):
        # One figure per model made from speech (the oracle has no voice).
        [(title, cls, value, words)] = cells
        assert title == "SF2F" and value == pytest.approx(typicality.values[i], abs=1e-6)
        assert cls == ("low" if typicality.values[i] < 0.05 else "ok")
        assert results_page.percent(typicality.values[i]) in words
    box = text.split('id="voice-typicality">')[1].split("</div>")[0]
    for words in ("<strong>Voice typicality</strong>", "percentile", "<code>voice_typicality"
                  "</code>", "<code>typicality_warning_below</code> = 0.05",
                  "below 5 %", "than 95 % of the known voices",
                  "SF2F: bank of 16 training identities",
                  "known voices: 18 (16 training identities, each without its own bank entry "
                  "and 2 <code>val</code> identities)", "at most its first 20 windows",
                  "; fusion: attention fuser"):
        assert words in box, words
    # report.md (and the page's metric section), metrics.json and samples.npz agree.
    md = open(os.path.join(report_dir, "report.md"), encoding="utf-8").read()
    assert "## Voice typicality" in md
    assert re.search(rf"\| SF2F \| 3 \| {np.median(typicality.values):.3f} \| "
                     rf"{int((typicality.values < 0.05).sum())} \| 0.05 \|", md)
    with open(os.path.join(report_dir, "metrics.json")) as f:
        meta = json.load(f)["voice_typicality"]
    assert set(meta) == {"SF2F"} and meta["SF2F"]["available"]
    assert meta["SF2F"]["values"] == pytest.approx(dict(zip(names, typicality.values.tolist())))
    saved = np.load(os.path.join(report_dir, "samples.npz"))
    np.testing.assert_array_equal(saved["typicality|SF2F"], typicality.values)


@pytest.fixture(scope="module")
def atypical(tmp_path_factory):
    """The corpus with a planted white-noise voice among the test identities, evaluated (one
    run of 1.25 s crops and all windows) with an attention-fuser model and a stage-1 model
    (no fuser), both on one page."""
    data_dir = _procedural_dir(str(tmp_path_factory.mktemp("noisy_corpus")), noise=True)
    config = ev.EvaluationConfig(data_dir=data_dir, runs=1, durations=(1.25,))
    evaluator = ev.Evaluator(config, [_tiny_embedder()], 128)
    results, samples = {}, {}
    for name, fuser in (("SF2F", "attention"), ("stage 1", "")):
        out = evaluator.evaluate(ev.FaceGenerator(_tiny_generator(fuser=fuser), 8))
        results[name], samples[name] = out["results"], out["samples"]
    report_dir = str(tmp_path_factory.mktemp("noisy_report"))
    ev.write_report(report_dir, config, evaluator, results, samples, [])
    return evaluator, samples, report_dir


def test_a_planted_atypical_voice_gets_the_warning_from_every_model(atypical):
    evaluator, samples, report_dir = atypical
    names = list(evaluator.split.names)
    noise = names.index(NOISE)
    for model, out in samples.items():
        values = out.typicality.values
        assert values[noise] < out.typicality.warning_below, (model, values)
        assert values[noise] < np.delete(values, noise).min(), (model, values)
    # Without a fuser the windows are averaged and re-normalised, as that model's export does.
    assert samples["stage 1"].typicality.info["fusion"].startswith(
        "mean of the unit window embeddings")
    assert not samples["stage 1"].has_fuser and samples["SF2F"].has_fuser

    text = open(os.path.join(report_dir, "index.html"), encoding="utf-8").read()
    rows = dict(_typicality_rows(text))
    assert set(rows) == set(names)
    for name, cells in rows.items():
        assert [title for title, *_ in cells] == ["SF2F", "stage 1"]
        for (model, cls, value, words) in cells:  # each model's own figure
            own = samples[model].typicality.values[names.index(name)]
            assert value == pytest.approx(own, abs=1e-6)
            assert (cls == "low") == (own < 0.05)
            assert ("atypical voice" in words) == (cls == "low")
    assert [cls for _, cls, _, _ in rows[NOISE]] == ["low", "low"]
    assert "⚠" in rows[NOISE][0][3] and "says little about it" in rows[NOISE][0][3]
    # The corpus's own held-out voices are not all flagged.
    assert any(cls == "ok" for name, cells in rows.items() if name != NOISE
               for _, cls, _, _ in cells)
    assert "stage 1: bank of 16 training identities" in text
    # The noise identity's speech cannot be regenerated: the page says so and goes on.
    assert "Audio not available" in text
    md = open(os.path.join(report_dir, "report.md"), encoding="utf-8").read()
    section = md.split("## Voice typicality")[1]
    assert f"- SF2F, below 0.05: `{NOISE}` (" in section
    assert f"- stage 1, below 0.05: `{NOISE}` (" in section


def test_without_training_identities_the_page_says_so(tmp_path):
    """Data without a training split: no typicality, and the page, report.md and
    metrics.json say why instead of failing."""
    data_dir = _procedural_dir(str(tmp_path / "data"), speech_splits=())
    config = ev.EvaluationConfig(data_dir=data_dir, runs=1, durations=(1.25,))
    evaluator = ev.Evaluator(config, [_tiny_embedder()], 128)
    out = evaluator.evaluate(ev.FaceGenerator(_tiny_generator(), 8))
    typicality = out["samples"].typicality
    assert typicality.values is None
    assert "cannot read the training split" in typicality.reason
    assert "no split named 'train'" in typicality.reason
    ev.write_report(str(tmp_path / "report"), config, evaluator, {"SF2F": out["results"]},
                    {"SF2F": out["samples"]}, [])
    text = (tmp_path / "report" / "index.html").read_text(encoding="utf-8")
    box = text.split('id="voice-typicality">')[1].split("</div>")[0]
    assert "SF2F: not computed: voice typicality: cannot read the training split of" in box
    for _, cells in _typicality_rows(text):
        [(title, cls, value, words)] = cells
        assert (title, cls, value) == ("SF2F", "na", None) and "not computed" in words
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "| SF2F | - | - | - | 0.05 |" in md and "- SF2F: not computed: voice typicality" in md
    meta = json.loads((tmp_path / "report" / "metrics.json").read_text())["voice_typicality"]
    assert meta["SF2F"]["available"] is False and "training split" in meta["SF2F"]["reason"]
    # Switched off: nothing is computed or shown.
    config.typicality = False
    assert evaluator.evaluate(ev.FaceGenerator(_tiny_generator(), 8))["samples"].typicality \
        is None


# -- VoxCeleb: the source file is recorded, found and played ---------------------------------

def _vox_tree(root):
    os.makedirs(os.path.join(root, "vox1"))
    with open(os.path.join(root, "vox1", "vox1_meta.csv"), "w") as f:
        f.write("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
                "id10001\tAlice_A\tf\tUSA\tdev\nid10002\tBob_B\tm\tUSA\ttest\n")
    with open(os.path.join(root, "split.json"), "w") as f:
        f.write('{"vox1": {"train": ["Alice_A"], "val": [], "test": ["Bob_B"]}}')
    for identity, (spk, name) in enumerate((("id10001", "Alice_A"), ("id10002", "Bob_B"))):
        for clip in ("c1", "c2"):
            path = os.path.join(root, "raw_wav", "vox1", "dev", spk, clip, "00001.wav")
            os.makedirs(os.path.dirname(path))
            from keras_sf2f.data import corpus
            sf.write(path, corpus.synthesize_utterance(SEED, identity, int(clip[1])), 16000,
                     subtype="PCM_16")
        faces = os.path.join(root, "vox1", "masked_faces", name)
        os.makedirs(faces)
        Image.fromarray(draw_face(SEED, identity, 0, 128)).save(os.path.join(faces, "1.png"))


def test_voxceleb_source_paths_are_recorded_and_played(tmp_path):
    root, out = str(tmp_path / "VoxCeleb"), str(tmp_path / "prepared")
    _vox_tree(root)
    prepare.prepare_voxceleb(root, out, utterance_shards=1, face_shards=1)
    test = table.load_split(out, "test")
    assert test.utterance_sources == ["raw_wav/vox1/dev/id10002/c1/00001.wav",
                                      "raw_wav/vox1/dev/id10002/c2/00001.wav"]
    config = ev.EvaluationConfig(data_dir=out, runs=1, durations=(1.25,))
    clip = speech_audio.evaluation_clips(config, test, [0])[0]["1.25 s"]
    assert not clip.unavailable and clip.samples is not None
    used = np.concatenate([test.frames.numpy()[int(test.utt_start[p.utterance]) + p.first_frame:
                                               int(test.utt_start[p.utterance]) + p.first_frame
                                               + p.frames] for p in clip.pieces])
    _check_pieces(clip, clip.samples, used.astype(np.float32))

    shutil.move(root, str(tmp_path / "moved"))  # the dataset root is gone
    clip = speech_audio.evaluation_clips(config, test, [0])[0]["1.25 s"]
    assert clip.samples is None and "is not there" in clip.unavailable


def test_data_without_source_paths_says_audio_not_available(tmp_path):
    """Data prepared before source paths were recorded (no ``source_path`` feature) still
    loads; its page says why there is no audio."""
    out = str(tmp_path / "old")
    writer = DatasetWriter(out, {"test": ["vox1/A"]}, utterance_shards=1,
                           source={"kind": "voxceleb", "root": "/nowhere",
                                   "audio_source": "wav"})
    writer.add_utterance("vox1/A", "c_00001.wav", np.zeros((200, 40), np.float32))
    writer.add_face("vox1/A", "1.png", procedural.face_pngs(draw_face(0, 0, 0, 128),
                                                             records.IMAGE_SIZES))
    writer.close()
    test = table.load_split(out, "test")
    assert test.utterance_sources == [""]
    config = ev.EvaluationConfig(data_dir=out, runs=1, durations=(1.25,))
    clip = speech_audio.evaluation_clips(config, test, [0])[0]["1.25 s"]
    assert clip.samples is None and "records no audio file" in clip.unavailable
    page = results_page.Page("t", inputs=[("1.25 s", "")],
                             rows=[results_page.Row("vox1/A", None, {"1.25 s": clip})])
    text = open(results_page.write_page(str(tmp_path / "page"), page)).read()
    assert "Audio not available: the prepared data records no audio file" in text


# -- the page in headless Chromium ------------------------------------------------------------

@requires_chromium
def test_page_in_headless_chromium(evaluation, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    _, evaluator, _, report_dir, _ = evaluation
    with headless_chromium((1400, 1000), ["--autoplay-policy=no-user-gesture-required"],
                           browser_log=True) as driver:
        driver.get("file://" + os.path.abspath(os.path.join(report_dir, "index.html")))
        wait = WebDriverWait(driver, 20)
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
        images = driver.execute_script(
            "return [...document.images].map(i => [i.getAttribute('src'), i.complete, "
            "i.naturalWidth])")
        # photo, 3 inputs x 2 sizes, the oracle's three kinds
        assert len(images) == 3 * (1 + 3 * 2 + 3)
        assert all(done and width > 0 for _, done, width in images), images
        count = driver.execute_script("return document.querySelectorAll('audio').length")
        assert count == 3 * 3
        # A typicality figure under every photo, and what it means above the table.
        assert driver.execute_script(
            "return document.querySelectorAll('th.identity .typicality .typ').length") == 3
        assert driver.find_element("id", "voice-typicality").is_displayed()
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('audio')].every(a => a.readyState >= 2 "
            "|| a.error)"))
        states = driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const audios = [...document.querySelectorAll('audio')];
            Promise.all(audios.map(a => { a.muted = true;
                return a.play().then(() => { a.pause(); return 'played'; },
                                     e => 'refused: ' + e); }))
              .then(played => done(audios.map((a, k) => [a.getAttribute('src'),
                  a.readyState, a.error && a.error.code, a.duration, played[k]])));""")
        for src, ready, error, duration, played in states:
            assert ready >= 2 and error is None and played == "played", (src, ready, error,
                                                                         played)
            assert duration > 1.0
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
        assert driver.execute_script("return document.title").startswith("Speech to face")
        driver.save_screenshot(str(tmp_path / "page.png"))


@requires_chromium
def test_atypical_voice_warning_in_headless_chromium(atypical, tmp_path):
    """The page with a warned voice loads without console errors; the warnings are visible and
    stand out (their own background colour), the other figures are plain."""
    from selenium.webdriver.support.ui import WebDriverWait

    evaluator, samples, report_dir = atypical
    warned = sum(int((s.typicality.values < 0.05).sum()) for s in samples.values())
    with headless_chromium((1400, 1000), browser_log=True) as driver:
        driver.get("file://" + os.path.abspath(os.path.join(report_dir, "index.html")))
        WebDriverWait(driver, 20).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
        styles = driver.execute_script("""
            return [...document.querySelectorAll('.typicality .typ')].map(e => [
                e.className, getComputedStyle(e).backgroundColor,
                e.getBoundingClientRect().width > 0, e.textContent]);""")
        assert len(styles) == 2 * len(evaluator.split.names)
        low = [s for s in styles if "low" in s[0]]
        assert len(low) == warned >= 2
        for _, background, visible, words in low:
            assert visible and background == "rgb(253, 236, 234)" and "⚠" in words
        assert all(s[1] == "rgba(0, 0, 0, 0)" for s in styles if "low" not in s[0])
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
        noise_row = driver.execute_script(
            "return [...document.querySelectorAll('tbody.identity')].findIndex(b => "
            f"b.querySelector('.name').textContent === '{NOISE}')")
        driver.execute_script("document.querySelectorAll('tbody.identity')[arguments[0]]"
                              ".scrollIntoView()", noise_row)
        driver.save_screenshot(str(tmp_path / "atypical.png"))

