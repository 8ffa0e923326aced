"""The review page in a real headless Chromium (Debian's chromium + chromium-driver, driven
by Selenium): choose images, reload, restart the server, export the dataset.

Chromium: tests/browser.py.
The curated directory is made here without the models: manifest rows + drawn faces.
"""

import os

import numpy as np
import pytest
from PIL import Image

from keras_sf2f.curation import review_server
from keras_sf2f.curation.manifest import Manifest
from keras_sf2f.data.corpus.face import draw_face

from browser import BROWSER, headless_chromium

pytestmark = BROWSER

IDENTITIES = {"Alice_A": 3, "Bob_B": 9, "Carol_C": 2}


def make_curated(root: str) -> None:
    with Manifest(root) as m:
        for ident, (name, n) in enumerate(IDENTITIES.items()):
            for i in range(n):
                outputs = {}
                face = draw_face(3, ident, i, 128, "aligned")
                big = np.asarray(Image.fromarray(face).resize((224, 224),
                                                              Image.Resampling.BICUBIC))
                for kind in ("masked", "origin"):
                    rel = os.path.join("aligned", "224", kind, name, f"{i:03d}_jpg.png")
                    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
                    Image.fromarray(big).save(os.path.join(root, rel))
                    outputs[f"{kind}_224"] = rel
                m.put({"key": f"{name}/{i:03d}.jpg", "identity": name,
                       "filename": f"{i:03d}.jpg", "source": f"/raw/{name}/{i:03d}.jpg",
                       "status": "accepted", "width": 800, "height": 600,
                       "scores": {"interpupil_px": 80.0, "expression_top": "neutral"},
                       "outputs": outputs})
        m.put({"key": "Dan_D/0.jpg", "identity": "Dan_D", "filename": "0.jpg",
               "source": "/raw/Dan_D/0.jpg", "status": "rejected", "reason": "no_face"})


@pytest.fixture()
def browser():
    with headless_chromium((1300, 900)) as driver:
        yield driver


def serve(curated):
    app = review_server.ReviewApp(review_server.ReviewSettings(curated_dir=curated))
    return review_server.ReviewServer(app, "127.0.0.1", 0).start()


def test_review_page_choices_survive_reload_and_restart_then_export(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    curated = str(tmp_path / "curated")
    make_curated(curated)
    wait = WebDriverWait(browser, 15)

    def ready():
        wait.until(lambda d: d.execute_script(
            "return document.body.dataset.ready === '1' && "
            "(document.body.dataset.busy || '0') === '0'"))

    def settle():
        wait.until(lambda d: d.execute_script("return (document.body.dataset.busy||'0')==='0'"))

    # Read the page in one script call each, so a re-render between two WebDriver calls
    # cannot hand back a stale element.
    def name():
        return browser.execute_script("return document.getElementById('identity-name').textContent")

    def kept_keys():
        return browser.execute_script(
            "return [...document.querySelectorAll('.candidate.kept')].map(e => e.dataset.key)")

    def press(key):
        browser.find_element(By.TAG_NAME, "body").send_keys(key)
        settle()

    server = serve(curated)
    try:
        browser.get(server.url)
        ready()
        assert name() == "Alice_A"
        assert len(browser.find_elements(By.CSS_SELECTOR, ".candidate")) == 3
        # every image loads
        assert browser.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth === 224)")
        browser.find_elements(By.CSS_SELECTOR, ".candidate")[0].click()  # mouse
        settle()
        press("3")                                                        # keyboard
        wait.until(lambda d: len(kept_keys()) == 2)
        assert kept_keys() == ["Alice_A/000.jpg", "Alice_A/002.jpg"]
        assert "saved" in browser.find_element(By.ID, "status").text

        browser.refresh()  # choices are on the server, not in the page
        ready()
        assert name() == "Alice_A" and kept_keys() == ["Alice_A/000.jpg", "Alice_A/002.jpg"]
        assert browser.find_element(By.ID, "kept-count").text.startswith("kept 2 / 7")

        press(Keys.ENTER)  # done, next
        wait.until(lambda d: name() == "Bob_B")
        for k in "12345678":
            press(k)
        wait.until(lambda d: "at most 7" in d.find_element(By.ID, "status").text)
        assert len(kept_keys()) == 7  # the 8th was refused

        press(Keys.ARROW_RIGHT)
        wait.until(lambda d: name() == "Carol_C")
        press("1")
        press("1")  # keep, then drop again: Carol keeps nothing and will be dropped
        assert kept_keys() == []
        assert "will be dropped" in browser.find_element(By.ID, "kept-count").text
        press(Keys.ENTER)
        browser.save_screenshot(str(tmp_path / "review.png"))
    finally:
        server.stop()
        server.app.close()

    server = serve(curated)  # a restarted server shows the same choices
    try:
        browser.get(server.url)
        ready()
        assert browser.find_element(By.ID, "progress").text == "3 / 3 identities reviewed"
        browser.find_element(By.CSS_SELECTOR, "#identity-list li[data-index='0']").click()
        settle()
        wait.until(lambda d: name() == "Alice_A" and len(kept_keys()) == 2)
        browser.find_element(By.ID, "export").click()
        settle()
        wait.until(lambda d: "Exported" in d.find_element(By.ID, "export-result").text)
        text = browser.find_element(By.ID, "export-result").text
        assert "Exported 9 images of 2 identities" in text and "Carol_C" in text
    finally:
        server.stop()
        server.app.close()

    root = os.path.join(curated, "dataset", "vox1")
    for kind in ("masked_faces", "origin_faces"):
        assert sorted(os.listdir(os.path.join(root, kind))) == ["Alice_A", "Bob_B"]
        assert sorted(os.listdir(os.path.join(root, kind, "Alice_A"))) == [
            "000_jpg.png", "002_jpg.png"]
        assert len(os.listdir(os.path.join(root, kind, "Bob_B"))) == 7
    assert os.path.isfile(os.path.join(root, "curation_export.json"))


def test_quick_key_presses_on_a_slow_server_are_applied_in_order(browser, tmp_path):
    """The race behind the old flaky run: a second "1" pressed before the first one's answer
    arrived read the same old state and sent "keep" again, so keep-then-drop ended as kept.
    A server that holds the keep answers until all three presses are made makes that window
    certain; actions are now queued in the page, so the presses apply in order whatever the
    latency."""
    import threading

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    curated = str(tmp_path / "curated")
    make_curated(curated)
    app = review_server.ReviewApp(review_server.ReviewSettings(curated_dir=curated))
    keep = app.keep
    # Held, not slept: a 0.3 s sleep left the busy check below racing the answers (3 presses
    # and the check took 0.07-0.27 s of the 0.9 s window here, more on a loaded CI machine).
    released = threading.Event()

    def slow_keep(*args, **kwargs):
        released.wait(30)
        return keep(*args, **kwargs)

    app.keep = slow_keep
    server = review_server.ReviewServer(app, "127.0.0.1", 0).start()
    wait = WebDriverWait(browser, 15)
    try:
        browser.get(server.url)
        wait.until(lambda d: d.execute_script(
            "return document.body.dataset.ready === '1' && document.body.dataset.busy === '0'"))
        body = browser.find_element(By.TAG_NAME, "body")
        body.send_keys("1")
        body.send_keys("1")  # before the first answer: queued, not lost
        body.send_keys("2")
        assert browser.execute_script("return Number(document.body.dataset.busy)") > 0
        released.set()
        wait.until(lambda d: d.execute_script("return document.body.dataset.busy === '0'"))
        kept = browser.execute_script(
            "return [...document.querySelectorAll('.candidate.kept')].map(e => e.dataset.key)")
        assert kept == ["Alice_A/001.jpg"]
        assert app.state()["identities"][0]["kept"] == 1
    finally:
        released.set()
        server.stop()
        app.close()


def test_review_server_refuses_bad_requests(tmp_path):
    """Plain HTTP (no browser): non-JSON posts, unknown keys, path tricks."""
    import json
    import urllib.error
    import urllib.request
    curated = str(tmp_path / "curated")
    make_curated(curated)
    server = serve(curated)

    def post(path, body, ctype="application/json"):
        req = urllib.request.Request(server.url.rstrip("/") + path, data=body,
                                     headers={"Content-Type": ctype}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        assert post("/api/keep", b"identity=Alice_A&key=x&kept=1",
                    "application/x-www-form-urlencoded")[0] == 415
        code, body = post("/api/keep", json.dumps(
            {"identity": "Alice_A", "key": "Dan_D/0.jpg", "kept": True}).encode())
        assert code == 409 and "not a candidate" in body["error"]
        code, body = post("/api/keep", json.dumps(
            {"identity": "Alice_A", "key": "Alice_A/001.jpg", "kept": True}).encode())
        assert code == 200 and body["kept"] == ["Alice_A/001.jpg"]
        for path in ("/image?key=../../etc/passwd&kind=masked", "/image?key=Dan_D/0.jpg",
                     "/../manifest.sqlite"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(server.url.rstrip("/") + path, timeout=10)
            assert e.value.code == 404
        with urllib.request.urlopen(server.url + "image?key=Alice_A/001.jpg&kind=origin",
                                    timeout=10) as r:
            assert r.headers["Content-Type"] == "image/png"
    finally:
        server.stop()
        server.app.close()
