"""keras_sf2f as an installed package: no script edits sys.path, pyproject.toml agrees with the
pinned requirements and with the tools in keras_sf2f/cli/, the wrappers and console scripts run
the tools (same --help), a CPU-only start prints no CUDA error, and the REST client runs with
TensorFlow, Keras and absl refused, against a stand-in server.
"""

import ast
import base64
import http.server
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
import tomllib
from importlib import metadata

import numpy as np
import pytest
import soundfile as sf
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from keras_sf2f import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI_DIR = os.path.join(REPO, "keras_sf2f", "cli")
with open(os.path.join(REPO, "pyproject.toml"), "rb") as _f:
    PYPROJECT = tomllib.load(_f)
SCRIPTS = PYPROJECT["project"]["scripts"]
# A run without the parent's settings: what a user's shell gives a tool.
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLED_DEVICE_TYPES")}


def _python_files():
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("runs", "data")]
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(root, name)


def test_no_file_edits_sys_path():
    """Scripts find keras_sf2f because it is installed (pip install -e .), and their siblings
    because a script's own folder is on sys.path; nothing inserts the repository."""
    edit = re.compile(r"sys\.path\s*(\.\s*(insert|append|extend|remove)\s*\("  # .insert(0, ...)
                      r"|(\[[^]]*\])?\s*\+?=[^=])")                        # = / += / [:0] =
    assert all(edit.search(line) for line in (
        "sys.path.insert(0, ROOT)", "sys.path.append(x)", "sys.path[:0] = [x]", "sys.path += [x]"))
    assert not any(edit.search(line) for line in ("for p in sys.path:", "x = sys.path == y"))
    offenders = []
    for path in _python_files():
        if path == os.path.abspath(__file__):
            continue  # the examples just above
        with open(path, encoding="utf-8") as f:
            offenders += [f"{os.path.relpath(path, REPO)}:{i}: {line.strip()}"
                          for i, line in enumerate(f, 1) if edit.search(line)]
    assert offenders == []


def _requirements(path):
    with open(os.path.join(REPO, path)) as f:
        return [Requirement(line.split("#")[0].strip()) for line in f
                if line.split("#")[0].strip()]


def test_pyproject_dependencies_match_the_pinned_requirements():
    pinned = {canonicalize_name(r.name): r for path in ("requirements.txt",
                                                       "requirements-test.txt")
              for r in _requirements(path)}
    declared = [Requirement(text) for text in PYPROJECT["project"]["dependencies"] +
                PYPROJECT["project"]["optional-dependencies"]["test"]]
    assert sorted(canonicalize_name(r.name) for r in declared) == sorted(pinned)
    for requirement in declared:
        (pin,) = pinned[canonicalize_name(requirement.name)].specifier
        assert pin.operator == "==", pin
        assert requirement.specifier.contains(pin.version, prereleases=True), \
            f"requirements pin {requirement.name}=={pin.version}, pyproject says {requirement}"


def test_every_tool_has_a_console_script_and_a_wrapper():
    tools = sorted(name[:-3] for name in os.listdir(CLI_DIR)
                   if name.endswith(".py") and name != "__init__.py")
    assert SCRIPTS == {f"sf2f-{t.replace('_', '-')}": f"keras_sf2f.cli.{t}:run" for t in tools}
    for tool in tools:
        with open(os.path.join(CLI_DIR, tool + ".py")) as f:
            module = ast.parse(f.read())
        assert ast.get_docstring(module), tool  # the tool's --help
        assert {"main", "run"} <= {node.name for node in module.body
                                    if isinstance(node, ast.FunctionDef)}, tool
    wrappers = {}
    for folder in ("trainers", "export"):
        for name in os.listdir(os.path.join(REPO, folder)):
            if name.endswith(".py"):
                with open(os.path.join(REPO, folder, name)) as f:
                    text = f.read()
                match = re.search(r"^from keras_sf2f\.cli\.(\w+) import run$", text, re.M)
                assert match and match.group(1) == name[:-3], f"{folder}/{name} is no wrapper"
                wrappers[name[:-3]] = folder
    assert sorted(wrappers) == tools
    # The environment's install is current (scripts/setup_env.sh re-installs on a change).
    installed = {e.name: e.value for e in metadata.distribution("keras-sf2f").entry_points
                 if e.group == "console_scripts"}
    assert installed == SCRIPTS, "re-run scripts/setup_env.sh (pip install --no-deps -e .)"


def _run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=CLEAN_ENV,
                          **kwargs)


def test_wrapper_and_console_script_show_the_tools_help(tmp_path):
    from keras_sf2f.cli import prepare_data
    first_line = prepare_data.__doc__.splitlines()[0]
    bin_dir = os.path.dirname(sys.executable)
    for command in ([sys.executable, os.path.join(REPO, "trainers", "prepare_data.py")],
                    [os.path.join(bin_dir, "sf2f-prepare-data")]):
        result = _run([*command, "--help"], cwd=str(tmp_path))
        assert result.stdout.startswith(first_line + "\n"), result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    # The tool's own options, under their section titles.
    result = _run([sys.executable, os.path.join(REPO, "export", "import_facenet_weights.py"),
                   "--help"], cwd=str(tmp_path))
    assert "FaceNet weights import:\n  --[no]include_logits" in result.stdout
    assert "--state_dict:" in result.stdout


def test_environment_defaults_for_tensorflow_leave_user_settings_alone():
    code = ("import os, keras_sf2f.cli as c; print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'), "
            "os.environ.get('TF_ENABLED_DEVICE_TYPES'), c._has_gpu_driver())")
    level, devices, gpu = _run([sys.executable, "-c", code]).stdout.split()
    assert level == "2" and devices == ("None" if gpu == "True" else "CPU")
    env = dict(CLEAN_ENV, TF_CPP_MIN_LOG_LEVEL="0", TF_ENABLED_DEVICE_TYPES="CPU,GPU")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.stdout.split()[:2] == ["0", "CPU,GPU"]


@pytest.mark.skipif(cli._has_gpu_driver(), reason="a GPU driver is installed")
def test_a_tool_on_a_cpu_only_machine_prints_no_cuda_error(tmp_path):
    result = _run([sys.executable, os.path.join(REPO, "trainers", "describe_model.py"),
                   f"--flagfile={os.path.join(REPO, 'configs', 'demo.cfg')}", "--json"],
                  cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["generator"] > 0
    # TensorFlow's C++ ERROR lines start with "E" and a date; none is expected here.
    errors = [line for line in result.stderr.splitlines()
              if re.match(r"E\d{4} ", line) or "cuInit" in line]
    assert errors == []


# -- the REST client without TensorFlow ---------------------------------------------------------

# Any import of TensorFlow, Keras or absl fails (None in sys.modules), then export/client.py runs
# as a script with the remaining arguments.
_CLIENT_RUNNER = """
import runpy, sys, time
for name in ("tensorflow", "keras", "absl"):
    sys.modules[name] = None
started = time.perf_counter()
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    sys.stderr.write(f"client seconds: {time.perf_counter() - started:.2f}\\n")
"""


class _StandInServer(http.server.ThreadingHTTPServer):
    """Answers TF-Serving's REST :predict with a fixed PNG and keeps the requests it got."""

    PNG = b"\x89PNG\r\n\x1a\nnot really a picture"

    def __init__(self):
        self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(handler):  # noqa: N805 - the server is self
                body = handler.rfile.read(int(handler.headers["Content-Length"]))
                self.requests.append((handler.path, json.loads(body)))
                answer = json.dumps({"predictions": [{"image_png_bytes": {
                    "b64": base64.b64encode(self.PNG).decode("ascii")}}]}).encode()
                handler.send_response(200)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(answer)))
                handler.end_headers()
                handler.wfile.write(answer)

            def log_message(handler, *args):  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def stand_in_server():
    server = _StandInServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _audio(path, fmt):
    t = np.arange(16000 * 2) / 16000
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * 220 * t), 16000, format=fmt,
             subtype="PCM_16")
    return path.read_bytes()


def _run_client(*args):
    started = time.perf_counter()
    result = _run([sys.executable, "-c", _CLIENT_RUNNER,
                   os.path.join(REPO, "export", "client.py"), *args])
    return result, time.perf_counter() - started


def test_rest_client_runs_without_tensorflow(stand_in_server, tmp_path):
    result, seconds = _run_client("--help")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--server SERVER" in result.stdout
    assert seconds < 10, seconds  # with TensorFlow imported it took 4-16 s

    wav = _audio(tmp_path / "a.wav", "WAV")      # a WAV the model decodes: sent as it is
    _audio(tmp_path / "b.flac", "FLAC")          # converted to WAV by the TF-free loader
    out = tmp_path / "faces"
    url = f"http://127.0.0.1:{stand_in_server.server_address[1]}"
    result, seconds = _run_client(f"--server={url}", "--model=sf2f_demo", "--model_version=3",
                                  f"--audio={tmp_path / 'a.wav'},{tmp_path / 'b.flac'}",
                                  f"--out={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert seconds < 20, seconds
    assert f"{tmp_path / 'b.flac'}: converted to WAV from a FLAC file" in result.stderr
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]
    assert (out / "a.png").read_bytes() == _StandInServer.PNG
    (path_a, body_a), (path_b, body_b) = stand_in_server.requests
    assert path_a == path_b == "/v1/models/sf2f_demo/versions/3:predict"
    assert body_a["signature_name"] == "serving_default"
    assert base64.b64decode(body_a["instances"][0]["audio"]["b64"]) == wav
    sent = base64.b64decode(body_b["instances"][0]["audio"]["b64"])
    samples, rate = sf.read(io.BytesIO(sent))
    assert sent[:4] == b"RIFF" and rate == 16000 and len(samples) == 32000
