"""What the variants need before training: the prepared data, the face-identity network and,
for the low-quality-faces variant, the same corpus prepared with in-the-wild faces. Missing
ones are made with the project's tools, from the base flagfile."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

from keras_sf2f.evaluation.ablations.catalog import VOICE_QUALITY_FLAG, AblationError
from keras_sf2f.evaluation.ablations.plan import Plan


def wild_prepare_args(dataset_info: dict, config: str, wild_dir: str) -> list:
    """prepare_data.py arguments for the same procedural corpus with in-the-wild faces.

    The corpus is a pure function of its spec, so the same spec with ``face_quality=
    in_the_wild`` gives the same identities and voices with low-quality faces. Only specs the
    data flags can express are accepted."""
    source = dataset_info.get("source", {})
    if source.get("kind") != "procedural":
        raise AblationError(
            "the low-quality-faces variant needs in-the-wild faces of the same identities: the "
            "data is not the procedural corpus, so pass --wild_data_dir (prepared data with "
            "the same identities and lower-quality faces) or leave the variant out")
    from keras_sf2f.data.corpus import CorpusSpec  # noqa: PLC0415 - light, no TensorFlow
    spec = dict(source["spec"])
    defaults = dataclasses.asdict(CorpusSpec())
    for field in ("image_size", "sample_rate", "val_fraction", "test_fraction"):
        if spec.get(field, defaults[field]) != defaults[field]:
            raise AblationError(
                f"the corpus was generated with {field}={spec[field]}, which prepare_data.py's "
                f"flags cannot reproduce; prepare the in-the-wild data yourself and pass "
                f"--wild_data_dir")
    args = [f"--flagfile={config}", f"--data_dir={wild_dir}", "--data_source=procedural",
            f"--corpus_seed={spec['seed']}", f"--corpus_identities={spec['num_identities']}",
            f"--utterances_per_identity={spec['utterances_per_identity']}",
            f"--images_per_identity={spec['images_per_identity']}",
            f"--faceid_images_per_identity={spec['faceid_images_per_identity']}",
            "--face_quality=in_the_wild"]
    if spec.get("num_faceid_identities") is not None:
        args.append(f"--faceid_identities={spec['num_faceid_identities']}")
    if spec.get("extra_train_identities"):
        args.append(f"--extra_train_identities={spec['extra_train_identities']}")
    return args


def ensure_inputs(plan: Plan, chosen: list, run_tool: Callable, stamp: Callable) -> dict:
    """Prepares the data and trains the face-identity network when missing, and the
    in-the-wild data when a chosen variant trains on it; ``run_tool(script, args, log_path,
    what)`` runs a tool; the data gets the voice-quality channels when it is prepared here for
    a row that trains on them. Returns ``{variant name: why}`` of the variants that cannot
    run: their in-the-wild data cannot be prepared, or the given data has no voice-quality
    channels."""
    p = plan
    logs = os.path.join(p.output_dir, "logs")
    quality = any(v.voice_quality for v in chosen)
    if not os.path.isfile(os.path.join(p.data_dir, "dataset.json")):
        # The records keep the log-mels as they are; the other rows read only those.
        run_tool("trainers/prepare_data.py",
                 [f"--flagfile={p.base_config}", f"--data_dir={p.data_dir}"]
                 + ([VOICE_QUALITY_FLAG] if quality else []),
                 os.path.join(logs, "prepare_data.log"),
                 f"preparing {p.data_dir} from {p.base_config}")
    face_net_ready = (os.path.isfile(p.face_network) if p.face_network.endswith(".keras")
                      else os.path.isfile(os.path.join(p.face_network,
                                                       "face_identity.json")))
    if not face_net_ready:
        run_tool("trainers/train_face_identity.py",
                 [f"--flagfile={p.base_config}", f"--data_dir={p.data_dir}",
                  f"--output_dir={p.face_network}"],
                 os.path.join(logs, "train_face_identity.log"),
                 f"training the face-identity network -> {p.face_network}")
    failed = {}
    if quality and not has_voice_quality(p.data_dir):
        why = (f"{p.data_dir} was prepared without voice-quality channels: prepare it with "
               f"{VOICE_QUALITY_FLAG} (the other rows read the same log-mels) or leave the "
               f"row out")
        for v in chosen:
            if v.voice_quality:
                failed[v.name] = why
        stamp(f"skipping the voice-quality row: {why}")
    if any(v.wild_faces for v in chosen) and not os.path.isfile(
            os.path.join(p.wild_data_dir, "dataset.json")):
        with open(os.path.join(p.data_dir, "dataset.json")) as f:
            info = json.load(f)
        try:
            args = wild_prepare_args(info, p.base_config, p.wild_data_dir)
        except AblationError as e:
            for v in chosen:
                if v.wild_faces:
                    failed[v.name] = str(e)
            stamp(f"skipping the in-the-wild variant: {e}")
            return failed
        run_tool("trainers/prepare_data.py", args,
                 os.path.join(logs, "prepare_data_in_the_wild.log"),
                 f"preparing in-the-wild faces -> {p.wild_data_dir}")
    if any(v.wild_faces for v in chosen if v.name not in failed):
        check_same_voices(p.data_dir, p.wild_data_dir)
    return failed


def has_voice_quality(data_dir: str) -> bool:
    """Whether ``data_dir``'s records carry the voice-quality channels."""
    with open(os.path.join(data_dir, "dataset.json")) as f:
        return bool(json.load(f).get("voice_quality_channels"))


def check_same_voices(data_dir: str, wild_data_dir: str) -> None:
    """The in-the-wild data must hold the same identities and speech as data_dir."""
    def splits(d):
        with open(os.path.join(d, "dataset.json")) as f:
            return {k: (s["identities"], s["utterances"], s["speech_seconds"])
                    for k, s in json.load(f)["splits"].items() if k != "faceid"}
    base, wild = splits(data_dir), splits(wild_data_dir)
    if base != wild:
        raise AblationError(f"{wild_data_dir} does not hold the same voice-face identities "
                            f"and speech as {data_dir}: {wild} vs {base}")
