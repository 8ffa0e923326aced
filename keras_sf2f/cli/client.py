r"""Turns audio files into faces with a served keras-sf2f model (TF-Serving or the dev server).

    python export/client.py --server=http://localhost:8501 --model=sf2f_64 \
        --audio=a.wav,b.flac [more.mp3 ...] --out=faces/
    python export/client.py --grpc=localhost:8500 --model=sf2f_64 --audio=a.wav --out=faces/

REST: POST /v1/models/<model>:predict with {"instances": [{"audio": {"b64": ...}}]}; gRPC:
PredictionService/Predict (tensorflow_serving.apis). One request per file; writes
<out>/<file stem>.png. The served graph decodes WAV only: a WAV it decodes is sent as it is,
any other file the project's audio loader reads (FLAC, Ogg, MP3, M4A, u-law WAV,
unusual sample rates ...) is converted to WAV first. A server error is printed verbatim (e.g.
"audio[0]: too short: ...") and the exit status is 1 when any file failed.

Each file's line shows the model's voice typicality (how typical the voice is of the voices the
model was trained on, 0..1), and a "warning:" line follows on stderr when it is below
--typicality_warning_below. That threshold is recorded in the export's metadata
(assets.extra/sf2f_export.json, typicality_warning_below), which TF-Serving's API does not
serve, so the client uses the export's default, 0.05, unless the option gives the exported
value. A model exported without the prepared data has no typicality: the client says so once.

The REST path runs without TensorFlow (standard library, numpy and the audio loader), so this
tool turns its options (keras_sf2f.config.groups.ClientOptions) into argparse arguments instead
of absl flags, whose validators import Keras.
"""

import argparse
import os
import sys

from keras_sf2f import files
from keras_sf2f.config import options
from keras_sf2f.config.groups import ClientOptions


def _parser() -> argparse.ArgumentParser:
    """The client's options (keras_sf2f.config.groups.ClientOptions) as argparse arguments."""
    parser = argparse.ArgumentParser(
        description="Turns audio files into faces with a served keras-sf2f model.")
    for opt in options.options_of(ClientOptions):
        text = opt.help.replace("%", "%%")  # argparse formats help with %
        if opt.kind is tuple:  # repeatable, each comma separated
            parser.add_argument(f"--{opt.name}", action="append", default=[], help=text)
        else:
            shown = "" if opt.default is None else f" (default: {opt.default})"
            parser.add_argument(f"--{opt.name}", type=opt.kind, default=opt.default,
                                help=text + shown)
    parser.add_argument("files", nargs="*", help="more audio files")
    return parser


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    audio = [p for value in args.audio for p in value.split(",") if p] + list(args.files)
    if not audio:
        parser.error("give audio files with --audio=a.wav,b.flac (or as arguments)")
    if bool(args.server) == bool(args.grpc):
        parser.error("give exactly one of --server=http://HOST:8501 and --grpc=HOST:8500")
    if not args.model:
        parser.error("--model is required")
    if not args.out:
        parser.error("--out is required")
    problems = options.bound_problems(ClientOptions(**{
        opt.name: getattr(args, opt.name) for opt in options.options_of(ClientOptions)
        if opt.kind is not tuple}))
    if problems:
        parser.error("; ".join(problems))

    from keras_sf2f.serving import audio_formats, client  # noqa: PLC0415 - keep --help fast
    warning_below = args.typicality_warning_below
    told_no_typicality = False

    os.makedirs(args.out, exist_ok=True)
    failures = 0
    for path, png_path in zip(audio, client.output_paths(audio, args.out)):
        try:
            data, note = client.audio_for_request(path)
        except OSError as e:
            sys.stderr.write(f"{path}: cannot read: {e.strerror or e}\n")
            failures += 1
            continue
        except audio_formats.ConversionError as e:
            sys.stderr.write(f"{e}\n")
            failures += 1
            continue
        if note:
            sys.stderr.write(f"{path}: {note}\n")
        try:
            if args.grpc:
                prediction = client.grpc_predict(args.grpc, args.model, data,
                                                 args.model_version, args.request_timeout)
            else:
                prediction = client.rest_predict(args.server, args.model, data,
                                                 args.model_version, args.request_timeout)
        except client.PredictError as e:
            status = f" ({'HTTP ' if isinstance(e.status, int) else ''}{e.status})" \
                if e.status else ""
            sys.stderr.write(f"{path}: server error{status}: {e.message}\n")
            failures += 1
            continue
        with files.atomic_write(png_path, "wb") as f:  # no half-written PNG on a crash
            f.write(prediction.png)
        typicality = prediction.voice_typicality
        if typicality is None:
            print(f"{path} -> {png_path}", flush=True)
            if not told_no_typicality:
                sys.stderr.write("note: the model reports no voice typicality (it was exported "
                                 "without the prepared data), so unfamiliar voices are not "
                                 "flagged\n")
                told_no_typicality = True
            continue
        print(f"{path} -> {png_path} (voice typicality {typicality:.3f})", flush=True)
        warning = client.typicality_warning(typicality, warning_below)
        if warning:
            sys.stderr.write(f"warning: {path}: {warning}\n")
            sys.stderr.flush()
    return 1 if failures else 0


def run():
    """sf2f-client and export/client.py."""
    sys.exit(main())
