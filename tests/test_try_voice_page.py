"""The "Try your voice" page of the development server (GET /, keras_sf2f/serving/try_voice.py)
in headless Chromium: a fake microphone, a chosen file (its face is byte for byte the REST API's
answer for the same file), too little speech, the typicality display; then the page's headers
and config over plain HTTP, and the escaping and threshold lookup without a server.

The server and the exported tiny model are those of tests/test_serving.py (one server for this
module). A screenshot of the page with a face is saved to /tmp/try_voice/ for a person to look at.
"""

import base64
import json
import os
import re
import time
import types
import urllib.error
import urllib.request

import pytest

import test_serving
from browser import headless_chromium, requires_chromium
from keras_sf2f.serving import try_voice
from test_export import wav_bytes
from test_serving import MODEL, b64, post_json

# Slow (training, export or a server): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

# test_serving.py's module-scoped fixtures: the exported tiny model and export/serve.py on it.
tiny = test_serving.tiny
server = test_serving.server

SCREENSHOTS = "/tmp/try_voice"
# Long enough for a model call on a machine shared with a benchmark.
FACE_SECONDS = 120

# The page's outcome: "face" once the face is shown and decoded, "error" once an error is.
_OUTCOME = """
const figure = document.getElementById('face-figure'), face = document.getElementById('face');
if (!figure.hidden && face.complete && face.naturalWidth > 0) return 'face';
if (!document.getElementById('error').hidden) return 'error';
return null;
"""


def _wait_for_outcome(driver, seconds=FACE_SECONDS):
    from selenium.webdriver.support.ui import WebDriverWait
    outcome = WebDriverWait(driver, seconds, poll_frequency=0.2).until(
        lambda d: d.execute_script(_OUTCOME))
    return outcome, driver.execute_script(
        "return document.getElementById('error').innerText")


def _open(driver, url):
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get(url + "/")
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script("return document.readyState") == "complete")
    # The version comes from /try_voice/config.json: the page's script ran and fetched it.
    WebDriverWait(driver, 20).until(
        lambda d: "version 1" in d.find_element("id", "model-version").text)


def _severe(driver, allowed=()):
    """The browser's SEVERE console entries, but those naming one of ``allowed``."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
            and not any(text in e["message"] for text in allowed)]


def _choose_file(driver, path):
    """Chooses ``path`` in the page's file input, after hiding the previous face and error
    (the page hides them itself, but only once it has read the file)."""
    driver.execute_script("document.getElementById('face-figure').hidden = true;"
                          "document.getElementById('error').hidden = true;")
    driver.find_element("id", "file").send_keys(str(path))


def _shown_png(driver) -> bytes:
    src = driver.find_element("id", "face").get_attribute("src")
    assert src.startswith("data:image/png;base64,"), src[:60]
    return base64.b64decode(src.split(",", 1)[1])


def _screenshot(driver, name):
    """For a person to look at; not part of what is tested."""
    time.sleep(0.8)  # the page's smooth scroll to the face
    try:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        driver.save_screenshot(os.path.join(SCREENSHOTS, name))
    except OSError:
        pass


def _has_typicality(server) -> bool:
    """Whether the served export has the voice_typicality output (its metadata says so)."""
    meta = test_serving.get_json(server.url + f"/v1/models/{MODEL}/metadata")
    outputs = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]["outputs"]
    return "voice_typicality" in outputs


def _rest_png(server, wav) -> bytes:
    status, answer = post_json(server.url + f"/v1/models/{MODEL}:predict",
                               {"instances": [{"audio": b64(wav)}]})
    assert status == 200, answer
    return base64.b64decode(answer["predictions"][0]["image_png_bytes"]["b64"])


# -- in headless Chromium -----------------------------------------------------------------------

@requires_chromium
def test_fake_microphone_recording_gets_a_face(server, speech_like, tmp_path):
    recording = tmp_path / "voice.wav"
    recording.write_bytes(wav_bytes(speech_like(31, 3.0, sample_rate=48000), 48000))
    args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={recording}",
            "--autoplay-policy=no-user-gesture-required"]
    from selenium.webdriver.support.ui import WebDriverWait
    with headless_chromium((1300, 1000), args, browser_log=True) as driver:
        _open(driver, server.url)
        driver.find_element("id", "record").click()
        WebDriverWait(driver, 20).until(
            lambda d: d.find_element("id", "stop").is_enabled()
            or not d.find_element("id", "error").get_attribute("hidden"))
        assert driver.find_element("id", "error").get_attribute("hidden"), \
            driver.find_element("id", "error").text
        driver.execute_script("return new Promise(r => setTimeout(r, 3200))")
        driver.find_element("id", "stop").click()
        outcome, error = _wait_for_outcome(driver)
        assert outcome == "face", error
        _screenshot(driver, "screenshot.png")

        png = _shown_png(driver)
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        face = driver.execute_script("""
            const face = document.getElementById('face');
            return [face.naturalWidth, face.naturalHeight, face.width,
                    getComputedStyle(face).imageRendering,
                    document.getElementById('face-caption').innerText];""")
        assert face[:2] == [128, 128]  # the tiny model's picture
        assert face[2] >= 256 and face[2] % 128 == 0  # enlarged by a whole factor
        assert face[3] == "pixelated"
        assert "128 \u00d7 128 pixels" in face[4]
        # The spectrogram was drawn: many colours inside the axes, not one flat fill.
        colours = driver.execute_script("""
            const canvas = document.getElementById('spectrogram');
            const r = window.devicePixelRatio || 1;
            const data = canvas.getContext('2d').getImageData(
                60 * r, 14 * r, canvas.width - 80 * r, canvas.height - 60 * r).data;
            const seen = new Set();
            for (let i = 0; i < data.length; i += 4)
                seen.add(data[i] << 16 | data[i + 1] << 8 | data[i + 2]);
            return [seen.size, canvas.width, canvas.height];""")
        assert colours[0] > 50, colours
        # The recording can be heard back: a WAV of about the time recorded.
        WebDriverWait(driver, 20).until(lambda d: d.execute_script(
            "return document.getElementById('playback').readyState >= 1"))
        duration = driver.execute_script("return document.getElementById('playback').duration")
        assert 1.0 < duration < 10.0, duration
        info = driver.find_element("id", "audio-info").text
        assert info.startswith("Your recording (16 kHz 16-bit WAV)"), info
        # Typicality is shown when the export has it, and nothing about it otherwise.
        assert driver.find_element("id", "typicality").is_displayed() == \
            _has_typicality(server)
        assert _severe(driver) == []


@requires_chromium
def test_chosen_files_get_the_rest_apis_face(server, speech_like, tmp_path):
    wav = wav_bytes(speech_like(32, 2.6, sample_rate=22050), 22050)
    (tmp_path / "voice.wav").write_bytes(wav)
    flac = wav_bytes(speech_like(33, 2.8), 16000, "PCM_16", "FLAC")
    (tmp_path / "voice.flac").write_bytes(flac)
    with headless_chromium((1300, 1000), browser_log=True) as driver:
        _open(driver, server.url)
        _choose_file(driver, tmp_path / "voice.wav")
        outcome, error = _wait_for_outcome(driver)
        assert outcome == "face", error
        # A WAV is sent as it is: the face shown is the REST API's answer for that file.
        assert _shown_png(driver) == _rest_png(server, wav)
        assert "voice.wav (WAV, sent as it is)" in driver.find_element("id", "audio-info").text
        duration = driver.execute_script("return document.getElementById('playback').duration")
        assert abs(duration - 2.6) < 0.05, duration
        _screenshot(driver, "file.png")

        # Another format is decoded by the browser and sent as a 16 kHz WAV made in the page.
        first = _shown_png(driver)
        _choose_file(driver, tmp_path / "voice.flac")
        outcome, error = _wait_for_outcome(driver)
        assert outcome == "face", error
        info = driver.find_element("id", "audio-info").text
        assert "voice.flac (converted in the page to a 16 kHz 16-bit WAV)" in info, info
        assert _shown_png(driver) != first  # another voice, another face
        assert _severe(driver) == []


@requires_chromium
def test_too_little_speech_is_said_in_plain_words(server, speech_like, tmp_path):
    short = tmp_path / "short.wav"
    short.write_bytes(wav_bytes(speech_like(34, 0.5), 16000))
    with headless_chromium((1300, 1000), browser_log=True) as driver:
        _open(driver, server.url)
        _choose_file(driver, short)
        outcome, error = _wait_for_outcome(driver)
        assert outcome == "error"
        assert re.match(r"Too little speech: once the silence was removed, the model heard "
                        r"only 0\.\d+ s of speech, and it needs at least 1\.27 s\.", error), \
            error
        assert "The server said (HTTP 400): audio[0]: too short" in error
        assert driver.find_element("id", "face-waiting").text == "No face: see the message above."
        _screenshot(driver, "error.png")
        # The page still works: a good file after the error gets its face, the error goes.
        (tmp_path / "good.wav").write_bytes(wav_bytes(speech_like(35, 2.5), 16000))
        _choose_file(driver, tmp_path / "good.wav")
        outcome, error = _wait_for_outcome(driver)
        assert outcome == "face", error
        assert not driver.find_element("id", "error").is_displayed()
        # The 400 itself is logged by the browser as a failed load; nothing else.
        assert _severe(driver, allowed=["status of 400"]) == []


# Wraps the page's fetch: answers of :predict get a voice_typicality, the config a threshold,
# as an export with that output would give.
_FAKE_TYPICALITY = """
const [typicality, threshold] = arguments;
const realFetch = window.fetch.bind(window);
window.fetch = async (url, options) => {
  const response = await realFetch(url, options);
  const body = await response.json();
  if (String(url).endsWith(':predict') && body.predictions)
    body.predictions.forEach(p => { p.voice_typicality = typicality; });
  if (String(url).endsWith('config.json')) body.typicality_warning_below = threshold;
  return new Response(JSON.stringify(body), {status: response.status,
                                             headers: {'Content-Type': 'application/json'}});
};
"""


@requires_chromium
def test_typicality_is_shown_with_a_warning_below_the_threshold(server, speech_like, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait
    (tmp_path / "voice.wav").write_bytes(wav_bytes(speech_like(36, 2.6), 16000))
    with headless_chromium((1300, 1100), browser_log=True) as driver:
        _open(driver, server.url)
        for typicality, threshold, shown, warned in ((0.032, None, "3.2%", True),
                                                     (0.37, None, "37%", False),
                                                     (0.08, 0.1, "8%", True)):
            driver.execute_script(_FAKE_TYPICALITY, typicality, threshold)
            _choose_file(driver, tmp_path / "voice.wav")
            outcome, error = _wait_for_outcome(driver)
            assert outcome == "face", error
            WebDriverWait(driver, 20).until(
                lambda d: d.find_element("id", "typicality").is_displayed())
            text = driver.find_element("id", "typicality").text
            assert f"Typicality of this voice: {shown}" in text, text
            warning = driver.find_element("id", "typicality-warning")
            assert warning.is_displayed() == warned, text
            if warned:
                below = "5%" if threshold is None else "10%"
                assert warning.text.startswith("\u26a0 Unlike the voices this model was trained "
                                               f"on (typicality below {below})"), warning.text
                _screenshot(driver, "typicality.png")
            driver.refresh()  # the next case with a fresh fetch wrapper
            _open(driver, server.url)
        assert _severe(driver) == []


# -- over plain HTTP ----------------------------------------------------------------------------

def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_page_headers_config_and_unknown_paths(server):
    status, headers, body = _get(server.url + "/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "'unsafe-inline'" not in csp and "*" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    page = body.decode("utf-8")
    assert f'data-model="{MODEL}"' in page and "{{MODEL_NAME}}" not in page
    assert _get(server.url + "/index.html")[2] == body
    assert _get(server.url + "/?from=bookmark")[2] == body
    for path, content_type in (("/try_voice.js", "text/javascript; charset=utf-8"),
                               ("/try_voice_recorder.js", "text/javascript; charset=utf-8"),
                               ("/try_voice.css", "text/css; charset=utf-8")):
        status, headers, asset = _get(server.url + path)
        assert (status, headers["Content-Type"]) == (200, content_type), path
        assert headers["Content-Security-Policy"] == csp
        # Self-contained: nothing is loaded from elsewhere (the script names 127.0.0.1 and
        # localhost only in a message about where the microphone works).
        urls = set(re.findall(rb"(?:https?:)?//[A-Za-z0-9.-]*[A-Za-z0-9]", asset))
        assert urls <= {b"http://127.0.0.1", b"http://localhost"}, (path, urls)
        assert b"@import" not in asset and b"url(" not in asset, path
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert links and all(link.startswith("/") and not link.startswith("//")
                         or link.startswith("data:") for link in links), links

    status, headers, body = _get(server.url + "/try_voice/config.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    config = json.loads(body)
    assert config["model_name"] == MODEL and config["version"] == "1"
    assert config["predict_url"] == f"/v1/models/{MODEL}:predict"
    assert config["min_speech_seconds"] == pytest.approx(1.265)
    assert config["max_audio_seconds"] == 60.0
    assert config["max_request_bytes"] == test_serving.MAX_REQUEST_BYTES
    # The tiny export records a threshold only with a voice_typicality output.
    if _has_typicality(server):
        assert 0.0 <= config["typicality_warning_below"] <= 1.0
    else:
        assert config["typicality_warning_below"] is None
    assert config["default_typicality_warning_below"] == 0.05

    # Anything else is still the REST API's JSON 404; POST / is no page.
    for path in ("/index.htm", "/static/try_voice.js", "/try_voice", "/favicon.ico"):
        status, headers, body = _get(server.url + path)
        assert status == 404 and headers["Content-Type"] == "application/json", path
        assert "Malformed request: GET" in json.loads(body)["error"]
    status, answer = post_json(server.url + "/", {"instances": []})
    assert status == 404 and "error" in answer


def test_model_name_is_escaped_and_the_threshold_is_found_anywhere(tmp_path):
    content_type, body = try_voice.static_file("/index.html", 'a<b>"&\'')
    assert content_type == "text/html; charset=utf-8"
    assert b'data-model="a&lt;b&gt;&quot;&amp;&#x27;"' in body and b"<b>\"" not in body
    assert try_voice.static_file("/other", "m") is None

    version_dir = tmp_path / "7"
    (version_dir / "assets.extra").mkdir(parents=True)
    served = types.SimpleNamespace(version=7, path=str(version_dir), max_audio_seconds=30.0)
    manager = types.SimpleNamespace(model_name="m", current=served)
    # No export metadata (not a keras-sf2f export): only what the server knows.
    assert try_voice.config(manager)["typicality_warning_below"] is None
    for exported, expected in (
            ({"typicality_warning_below": 0.07}, 0.07),
            ({"audio_pipeline": {"min_speech_seconds": 1.265},
              "voice_typicality": {"typicality_warning_below": 0.02}}, 0.02),
            ({"typicality_warning_below": "nonsense"}, None),
            ({"typicality_warning_below": 3.0}, None)):
        (version_dir / "assets.extra" / "sf2f_export.json").write_text(json.dumps(exported))
        config = try_voice.config(manager, 1000)
        assert config["typicality_warning_below"] == expected, exported
        assert (config["version"], config["max_audio_seconds"]) == ("7", 30.0)
        assert config["max_request_bytes"] == 1000
    assert try_voice.config(types.SimpleNamespace(model_name="m", current=None))["version"] \
        is None
