"""Voice typicality: the ``voice_typicality`` output of every signature, its bank and
calibration from the prepared data, an export without data, the client's warning and the
benchmark (benchmarks/typicality.py) on a tiny export.

One tiny export (tests/test_export.py's model, random weights) calibrated on a small procedural
corpus is built once per module; the export without data is tests/test_export.py's shared one.
"""

import contextlib
import io
import json
import os
import shutil
import sys
import types
from concurrent import futures

import numpy as np
import pytest
import tensorflow as tf

from keras_sf2f import runs
from keras_sf2f.data import pipelines, procedural
from keras_sf2f.data.corpus import CorpusSpec
from keras_sf2f.data.prepare import prepare_procedural
from keras_sf2f.data.table import load_split
from keras_sf2f.models import builder, reference_import
from keras_sf2f.serving import savedmodel
from keras_sf2f.serving import client as sf2f_client
from keras_sf2f.serving.inference import TYPICALITY_OUTPUT
from conftest import load_script
from test_export import REPO, TINY_CONFIG, TINY_FLAGS, exported_tiny_model, randomize, wav_bytes

# Slow (training, export or a server): `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

CORPUS_SEED = 1


@pytest.fixture(scope="module")
def typical(tmp_path_factory):
    """A tiny checkpoint whose flags.cfg names a prepared corpus (16 train, 2 val, 2 test
    identities, 2 utterances each) and its export, calibrated on that corpus by default."""
    root = tmp_path_factory.mktemp("typicality")
    data_dir = str(root / "data")
    prepare_procedural(data_dir, CorpusSpec(
        seed=CORPUS_SEED, num_identities=20, utterances_per_identity=2, images_per_identity=1,
        image_size=64, num_faceid_identities=2, faceid_images_per_identity=1),
        num_workers=1, utterance_shards=1, preview=False)
    models = builder.build_models(builder.ModelConfig(**TINY_CONFIG))
    randomize(models.generator)
    checkpoint_dir = root / "run"
    reference_import.write_tf_checkpoint(models, str(checkpoint_dir), 120)
    (checkpoint_dir / "flags.cfg").write_text(TINY_FLAGS + f"--data_dir={data_dir}\n")
    exported = savedmodel.export_checkpoint(str(checkpoint_dir), str(root / "models" / "tiny"))
    with open(os.path.join(exported.path, "assets.extra", "sf2f_export.json")) as f:
        metadata = json.load(f)
    with open(os.path.join(exported.path, "assets.extra", "voice_typicality.json")) as f:
        calibration_file = json.load(f)
    bank, calibration = (v.numpy() for v in exported.loaded.typicality_variables)
    return types.SimpleNamespace(
        root=root, data_dir=data_dir, checkpoint_dir=str(checkpoint_dir),
        version_dir=exported.path, module=exported.module, loaded=exported.loaded,
        metadata=metadata, calibration_file=calibration_file, bank=bank,
        calibration=calibration)


def numpy_typicality(embedding, bank, calibration):
    """The definition, in numpy: share of calibration distances >= 1 - max cos to the bank."""
    distance = 1.0 - (np.asarray(embedding, np.float32) @ bank.T).max(axis=1)
    return (calibration[None, :] >= distance[:, None]).mean(axis=1), distance


def identity_windows(data_dir, split, identity, max_windows=20):
    table = load_split(data_dir, split, require_faces=False)
    segments, valid = pipelines.identity_windows(table, tf.constant(identity, tf.int64),
                                                 max_windows=max_windows)
    return table, segments.numpy()[valid.numpy()]


def white_noise(seed, seconds=3.0):
    return np.random.default_rng(seed).normal(0, 3000, int(seconds * 16000))


def training_speech(identity):
    """A training identity's regenerated utterances, as preparation computed its features."""
    return np.concatenate([procedural.utterance_speech(CORPUS_SEED, identity, item, 16000)
                           for item in range(2)]).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# The output
# ---------------------------------------------------------------------------------------------

def test_every_signature_returns_typicality_in_the_unit_interval(typical, speech_like):
    signatures = typical.loaded.signatures
    audio = tf.constant([wav_bytes(speech_like(3, 2.5), 16000),
                         wav_bytes(white_noise(1), 16000)])
    waveform = np.stack([speech_like(4, 2.0), white_noise(2, 2.0)]).astype(np.float32)
    log_mel = np.random.default_rng(5).normal(size=(2, 2, 125, 40)).astype(np.float32)
    outputs = [signatures["serving_default"](audio=audio),
               signatures["predict_waveform"](waveform=tf.constant(waveform),
                                              sample_rate=tf.constant(16000)),
               signatures["predict_mel"](log_mel=tf.constant(log_mel))]
    for output in outputs:
        value = output[TYPICALITY_OUTPUT]
        assert value.dtype == tf.float32 and value.shape == (2,)
        assert np.all((value.numpy() >= 0.0) & (value.numpy() <= 1.0))
    # Every value is a share of the calibration identities.
    count = typical.calibration.size
    for output in outputs:
        shares = output[TYPICALITY_OUTPUT].numpy() * count
        np.testing.assert_allclose(shares, np.round(shares), atol=1e-4)
    # The metadata lists the output under every signature and keeps the threshold.
    for signature in ("serving_default", "predict_waveform", "predict_mel"):
        assert TYPICALITY_OUTPUT in typical.metadata["signatures"][signature]["outputs"]
    assert typical.metadata["typicality_warning_below"] == 0.05
    section = typical.metadata["voice_typicality"]
    assert section["available"] and section["typicality_warning_below"] == 0.05
    assert section["bank"]["identities"] == 16
    assert section["calibration"] == {"train_leave_one_out": 16, "val": 2,
                                      "windows_per_identity": 20}
    assert "leave-one-out" in section["definition"]
    assert savedmodel.unregistered_ops(typical.version_dir) == []


def test_typicality_is_the_numpy_recomputation(typical, speech_like):
    loaded = typical.loaded
    # The stored calibration: sorted, the same in the graph and in voice_typicality.json.
    assert np.all(np.diff(typical.calibration) >= 0)
    np.testing.assert_array_equal(typical.calibration, np.asarray(
        typical.calibration_file["calibration_distances_sorted"], np.float32))
    assert typical.calibration.size == len(typical.calibration_file["calibration_identities"])
    np.testing.assert_allclose(np.linalg.norm(typical.bank, axis=1), 1.0, atol=1e-5)

    waveform = np.stack([speech_like(11, 3.0), speech_like(12, 3.0),
                         white_noise(3, 3.0)]).astype(np.float32)
    by_samples = loaded.signatures["predict_waveform"](waveform=tf.constant(waveform),
                                                       sample_rate=tf.constant(16000))
    log_mel = np.random.default_rng(6).normal(size=(2, 3, 125, 40)).astype(np.float32)
    by_mel = loaded.signatures["predict_mel"](log_mel=tf.constant(log_mel))
    for output in (by_samples, by_mel):
        expected, distance = numpy_typicality(output["embedding"].numpy(), typical.bank,
                                              typical.calibration)
        # A distance within float rounding of a calibration value could fall either side.
        gap = np.abs(typical.calibration[None, :] - distance[:, None]).min(axis=1)
        assert gap.min() > 1e-6
        np.testing.assert_allclose(output[TYPICALITY_OUTPUT].numpy(), expected, atol=1e-6)
    # serving_default, from the same samples as WAV files, agrees (without the trailing run
    # equal to the first sample, which predict_waveform drops as batch padding).
    kept = [row[:np.flatnonzero(row != row[0])[-1] + 1] for row in waveform]
    by_wav = loaded.signatures["serving_default"](
        audio=tf.constant([wav_bytes(row, 16000) for row in kept]))
    np.testing.assert_allclose(by_wav[TYPICALITY_OUTPUT], by_samples[TYPICALITY_OUTPUT],
                               atol=1e-6)
    # The Python module the export traced computes the same.
    python = typical.module.predict_mel(tf.constant(log_mel))
    np.testing.assert_allclose(python[TYPICALITY_OUTPUT], by_mel[TYPICALITY_OUTPUT], atol=1e-6)


def test_calibration_is_leave_one_out_and_matches_serving(typical):
    """Each calibration distance is the identity's serving embedding (its windows through
    predict_mel) against the bank: a training identity without its own bank vector, a
    validation identity against all of it."""
    predict_mel = typical.loaded.signatures["predict_mel"]
    entries = {(e["split"], e["name"]): e for e in
               typical.calibration_file["calibration_identities"]}
    bank_names = typical.calibration_file["bank_identities"]
    for split, identity in (("train", 0), ("train", 7), ("val", 1)):
        table, windows = identity_windows(typical.data_dir, split, identity)
        output = predict_mel(log_mel=tf.constant(windows[None]))
        embedding = output["embedding"].numpy()[0]
        similarity = typical.bank @ embedding
        entry = entries[(split, table.names[identity])]
        assert entry["windows"] == len(windows)
        if split == "train":
            row = bank_names.index(table.names[identity])
            # With no more windows than one request holds, the bank vector is this very
            # embedding: the identity's own speech is as typical as can be ...
            assert similarity[row] == pytest.approx(1.0, abs=1e-5)
            assert float(output[TYPICALITY_OUTPUT][0]) == 1.0
            # ... and its calibration distance leaves it out.
            similarity = np.delete(similarity, row)
        assert entry["distance"] == pytest.approx(1.0 - similarity.max(), abs=1e-5)


def test_own_speech_is_more_typical_than_noise(typical):
    audio = [wav_bytes(training_speech(identity), 16000) for identity in (0, 5)]
    audio += [wav_bytes(white_noise(seed), 16000) for seed in (7, 8)]
    values = typical.loaded.signatures["serving_default"](
        audio=tf.constant(audio))[TYPICALITY_OUTPUT].numpy()
    speech, noise = values[:2], values[2:]
    assert speech.min() > noise.max(), values
    assert noise.max() <= 0.1, values


# ---------------------------------------------------------------------------------------------
# Without data
# ---------------------------------------------------------------------------------------------

def test_an_export_without_data_has_no_typicality_and_says_why(tmp_path_factory, tmp_path):
    tiny = exported_tiny_model(tmp_path_factory)   # flags.cfg names no data directory
    for name, signature in tiny.loaded.signatures.items():
        assert TYPICALITY_OUTPUT not in signature.structured_outputs, name
    with open(os.path.join(tiny.version_dir, "assets.extra", "sf2f_export.json")) as f:
        metadata = json.load(f)
    assert metadata["typicality_warning_below"] is None
    section = metadata["voice_typicality"]
    assert section["available"] is False
    assert "no --data_dir was given" in section["reason"] and "flags.cfg" in section["reason"]
    assert not os.path.exists(os.path.join(tiny.version_dir, "assets.extra",
                                           "voice_typicality.json"))
    assert not tiny.python_model.has_typicality

    # Where the data comes from, and when there is none.
    flags = tmp_path / "flags.cfg"
    flags.write_text(f"--data_dir={tmp_path / 'gone'}\n--val_split=dev\n")
    run_flags, where = runs.read_flagfile(str(flags)), str(flags)
    data, val_split, reason = savedmodel._typicality_data(None, run_flags, where)
    assert data is None and val_split == "dev" and "is not a prepared data directory" in reason
    assert savedmodel._typicality_data("", run_flags, where)[2].startswith("switched off")
    with pytest.raises(savedmodel.ExportError, match="is not a directory"):
        savedmodel._typicality_data(str(tmp_path / "gone"), run_flags, where)
    assert savedmodel._typicality_data(str(tmp_path), run_flags, where) == (
        str(tmp_path), "dev", "")


def test_export_command_warns_loudly_without_data(typical, tmp_path):
    """The export tool, --data_dir= (empty): exported, with a WARNING line and the reason."""
    import subprocess  # noqa: PLC0415
    from test_export import SUBPROCESS_ENV  # noqa: PLC0415
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "export", "export_savedmodel.py"),
         f"--checkpoint_dir={typical.checkpoint_dir}", f"--export_dir={tmp_path / 'm'}",
         "--data_dir=", "--noverify_export"],
        capture_output=True, text=True, timeout=600, env=SUBPROCESS_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING: exported WITHOUT voice_typicality: switched off" in result.stderr
    with open(tmp_path / "m" / "1" / "assets.extra" / "sf2f_export.json") as f:
        section = json.load(f)["voice_typicality"]
    assert section == {"available": False, "reason": "switched off (--data_dir given empty)"}


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------

def _run_client(argv):
    from keras_sf2f.cli import client as client_cli  # noqa: PLC0415
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = client_cli.main(argv)
    return status, out.getvalue(), err.getvalue()


def test_client_prints_typicality_and_warns(typical, tmp_path):
    from keras_sf2f.serving import rest_server  # noqa: PLC0415
    speech = wav_bytes(training_speech(0), 16000)
    noise = wav_bytes(white_noise(9), 16000)
    values = typical.loaded.signatures["serving_default"](
        audio=tf.constant([speech, noise]))[TYPICALITY_OUTPUT].numpy()
    assert values[1] < values[0]
    (tmp_path / "speech.wav").write_bytes(speech)
    (tmp_path / "noise.wav").write_bytes(noise)
    base = tmp_path / "models" / "tiny"
    base.mkdir(parents=True)
    shutil.copytree(typical.version_dir, base / "1")
    server = rest_server.RestServer(str(base), "tiny", port=0)
    server.start(wait_for_model=120)
    try:
        common = [f"--server={server.url}", "--model=tiny", f"--out={tmp_path / 'faces'}",
                  str(tmp_path / "speech.wav"), str(tmp_path / "noise.wav")]
        # A threshold between the two voices: only the noise is warned about.
        threshold = float(values[1] + values[0]) / 2
        status, out, err = _run_client(common + [f"--typicality_warning_below={threshold}"])
        assert status == 0, err
        assert f"{tmp_path / 'speech.wav'} -> {tmp_path / 'faces' / 'speech.png'} " \
               f"(voice typicality {values[0]:.3f})" in out
        assert f"(voice typicality {values[1]:.3f})" in out
        warnings = [line for line in err.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1, err
        assert warnings[0].startswith(
            f"warning: {tmp_path / 'noise.wav'}: voice typicality {values[1]:.3f} is below "
            f"{threshold:g}: this voice is unlike the voices the model was trained on")
        # The default threshold is the export's default.
        status, out, err = _run_client(common)
        assert status == 0
        expected = sum(v < 0.05 for v in values)
        assert sum(line.startswith("warning:") for line in err.splitlines()) == expected
        prediction = sf2f_client.rest_predict(server.url, "tiny", noise)
        assert prediction.voice_typicality == pytest.approx(float(values[1]), abs=1e-6)
    finally:
        server.stop()


def test_client_without_typicality_says_so_once(tmp_path, monkeypatch, speech_like):
    """An export without the output (REST answers lack voice_typicality): the lines are as
    before, and one note says that unfamiliar voices are not flagged."""
    sent = []

    def answer(server, model, data, version=None, timeout=300.0):
        sent.append(data)
        return sf2f_client.Prediction(b"png", None)

    monkeypatch.setattr(sf2f_client, "rest_predict", answer)
    for name in ("a.wav", "b.wav"):
        (tmp_path / name).write_bytes(wav_bytes(speech_like(len(name), 2.5), 16000))
    status, out, err = _run_client(["--server=http://127.0.0.1:9", "--model=plain",
                                    f"--out={tmp_path / 'faces'}", str(tmp_path / "a.wav"),
                                    str(tmp_path / "b.wav")])
    assert status == 0, err
    assert len(sent) == 2
    assert out == (f"{tmp_path / 'a.wav'} -> {tmp_path / 'faces' / 'a.png'}\n"
                   f"{tmp_path / 'b.wav'} -> {tmp_path / 'faces' / 'b.png'}\n")
    assert err.count("reports no voice typicality") == 1


class _FilteringStandIn:
    """A gRPC PredictionService stand-in that, like TF-Serving, refuses an output filter naming
    an output the signature does not have."""

    def __init__(self, loaded):
        self.loaded = loaded

    def servicer(self):
        import grpc  # noqa: PLC0415
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa

        loaded = self.loaded

        class StandIn(prediction_service_pb2_grpc.PredictionServiceServicer):
            def Predict(self, request, context):  # noqa: N802 - gRPC method name
                signature = loaded.signatures[request.model_spec.signature_name]
                names = set(signature.structured_outputs)
                unknown = [n for n in request.output_filter if n not in names]
                if unknown:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"output tensor alias not found in signature: {unknown[0]} "
                                  f"Outputs expected to be in the set {{{','.join(names)}}}.")
                inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
                outputs = signature(**inputs)
                response = predict_pb2.PredictResponse()
                for key in request.output_filter or names:
                    response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key].numpy()))
                return response

        return StandIn()


@pytest.mark.parametrize("with_typicality", [True, False])
def test_grpc_client_reads_typicality_or_does_without(typical, tmp_path_factory, speech_like,
                                                      with_typicality):
    import grpc  # noqa: PLC0415
    from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: PLC0415
    loaded = typical.loaded if with_typicality else exported_tiny_model(tmp_path_factory).loaded
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        _FilteringStandIn(loaded).servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        wav = wav_bytes(speech_like(31, 2.5), 16000)
        prediction = sf2f_client.grpc_predict(f"127.0.0.1:{port}", "m", wav)
        expected = loaded.signatures["serving_default"](audio=tf.constant([wav]))
        assert prediction.png == expected["image_png_bytes"].numpy()[0]
        if with_typicality:
            assert prediction.voice_typicality == pytest.approx(
                float(expected[TYPICALITY_OUTPUT][0]), abs=1e-6)
        else:
            assert prediction.voice_typicality is None
        with pytest.raises(sf2f_client.PredictError, match="no speech found"):
            sf2f_client.grpc_predict(f"127.0.0.1:{port}", "m", wav_bytes(np.zeros(40000), 16000))
    finally:
        server.stop(None)


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------

def test_benchmark_on_the_tiny_export(typical, tmp_path):
    benchmark = load_script("benchmarks/typicality.py")
    espeak = shutil.which("espeak-ng") is not None
    argv = [f"--export={os.path.dirname(typical.version_dir)}", "--noise_per_kind=1",
            "--espeak_voices=en+m1,en+f3", "--espeak_pitches=50", f"--out={tmp_path / 'out'}"]
    if not espeak:
        argv.append("--noespeak")
    with contextlib.redirect_stdout(io.StringIO()):
        result = benchmark.main(argv)
    assert result["data_dir"] == os.path.abspath(typical.data_dir)   # from the metadata
    groups = result["groups"]
    assert groups["corpus"]["clips"] == 2 and groups["corpus_short"]["clips"] == 2
    assert groups["noise"]["clips"] == len(benchmark.NOISE_KINDS)
    assert ("espeak" in groups) == espeak
    assert result["typicality_mismatches"] == 0
    for item in result["items"]:
        if "error" not in item:
            assert 0.0 <= item["typicality"] <= 1.0
    for rows in result["separation"].values():
        for row in rows.values():
            assert 0.0 <= row["auroc_typicality"] <= 1.0
            assert 0.0 <= row["auroc_distance"] <= 1.0
    text = (tmp_path / "out" / "typicality.md").read_text()
    assert "| corpus | all_others |" in text
    assert json.loads((tmp_path / "out" / "typicality.json").read_text())["split"] == "test"
