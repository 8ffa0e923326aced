r"""DEVELOPMENT server for exported keras-sf2f models: a subset of TF-Serving's REST API.

NOT for production -- deploy with TensorFlow Serving (docs/serving.md). This serves the same
URLs and JSON as TF-Serving's REST API so that clients and tests can run without Docker:

    python export/serve.py --model_base_path=/models/sf2f_64 [--model_name=sf2f_64] \
        [--rest_api_port=8501] [--host=127.0.0.1]

    POST /v1/models/<name>[/versions/<n>]:predict   {"instances": [...]} or {"inputs": ...}
    GET  /v1/models/<name>[/versions/<n>]            version status
    GET  /v1/models/<name>[/versions/<n>]/metadata   signature defs
    GET  /                                           "Try your voice": a page that records
                                                     or takes a file and shows the face

Serves the newest numeric version under --model_base_path and picks up new ones (polled every
--file_system_poll_wait_seconds); a version that fails to load is retried
(--max_num_load_retries, --load_retry_interval_micros, as TF-Serving). Binds 127.0.0.1 unless
--host is given. Bad input gets an HTTP 400 {"error": "..."}; unknown model/version 404; bodies
over --max_request_bytes 413; a request not received within --read_timeout_seconds 408; no room
in --max_inflight_request_bytes for --max_queue_seconds 503 with Retry-After. Audio that is not
a WAV the model decodes (FLAC, Ogg, MP3, ...) is converted first. Model calls are serialised
(--concurrent_model_calls). No gRPC, no batching, no labels.
"""

import os
import signal
import sys
import threading

from absl import app, logging

from keras_sf2f import machine
from keras_sf2f.cli import run_absl_tool
from keras_sf2f.flags import ToolFlags

FLAGS = ToolFlags("serve")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.model_base_path:
        raise app.UsageError("--model_base_path is required (<base>/<model name>)")
    # Before TensorFlow loads (RestServer imports it): single requests are answered faster
    # with Eigen's kernels on AVX2-only CPUs (machine.prefer_eigen_for_single_requests).
    if machine.prefer_eigen_for_single_requests():
        logging.info("CPU without AVX-512: TensorFlow's Eigen kernels, faster than oneDNN's for "
                     "single requests here (TF_ENABLE_ONEDNN_OPTS=1 to override)")
    import logging as std_logging  # noqa: PLC0415
    from keras_sf2f.serving.rest_server import RestServer  # noqa: PLC0415

    std_logging.getLogger("keras_sf2f.serving.rest_server").setLevel(std_logging.INFO)
    base = FLAGS.model_base_path.rstrip("/") or "/"
    name = FLAGS.model_name or os.path.basename(base)
    try:
        server = RestServer(base, name, host=FLAGS.host, port=FLAGS.rest_api_port,
                            poll_seconds=FLAGS.file_system_poll_wait_seconds,
                            max_request_bytes=FLAGS.max_request_bytes,
                            concurrent_model_calls=FLAGS.concurrent_model_calls,
                            max_load_retries=FLAGS.max_num_load_retries,
                            load_retry_interval=FLAGS.load_retry_interval_micros / 1e6,
                            max_inflight_request_bytes=FLAGS.max_inflight_request_bytes,
                            max_queue_seconds=FLAGS.max_queue_seconds,
                            read_timeout=FLAGS.read_timeout_seconds,
                            max_items_per_request=FLAGS.max_items_per_request)
    except ValueError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    except OSError as e:  # the port: in use, privileged, or an address not on this machine
        sys.stderr.write(f"error: {e.strerror or e}\n")
        return 1
    logging.warning("DEVELOPMENT server (not TF-Serving; do not expose it): model %s from %s "
                    "at %s/v1/models/%s", name, base, server.url, name)
    # Printed (and flushed) for scripts and tests that wait for the port.
    print(f"listening on {server.url}", flush=True)
    print(f"Try your voice: open {server.url}/ in a browser (microphone or audio file -> the "
          f"model's face)", flush=True)

    def stop(signum, frame):
        threading.Thread(target=server.httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return 0


def run():
    """sf2f-serve and export/serve.py."""
    run_absl_tool(__name__)
