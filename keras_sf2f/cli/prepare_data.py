r"""Prepares training records from the embedded corpus or a VoxCeleb + HQ-VoxCeleb tree.

    python trainers/prepare_data.py --flagfile=configs/demo.cfg --data_dir=runs/demo/data
    python trainers/prepare_data.py --data_source=voxceleb --voxceleb_root=data/VoxCeleb \
        --data_dir=runs/vox/data [--audio_source=mel_pickles]

    python trainers/prepare_data.py --verify --data_dir=runs/vox/data

VoxCeleb on several machines (a job array: task i of n runs the first command, all with the
same flags and --data_dir on a shared disk; then one merge):

    python trainers/prepare_data.py --data_source=voxceleb --voxceleb_root=data/VoxCeleb \
        --data_dir=runs/vox/data --num_workers=16 --shard_index=$i --num_shards=$n
    python trainers/prepare_data.py --merge_shards --data_dir=runs/vox/data

Prints what it made; writes splits.json, dataset.json (with a sha256 per shard), the TFRecord
shards and (for the corpus) a contact sheet of faces and a spectrogram picture into --data_dir.
--verify prepares nothing: it re-checks --data_dir against those checksums, prints one line per
bad shard (missing, truncated, changed, or left over from another preparation) and exits 1 if
there is any.

A shard writes only <data_dir>/shards/<i>-of-<n>/ and marks itself complete last;
--merge_shards checks that all n are complete and were made with the same options from the same
tree, writes the same records and dataset.json an unsharded run writes, and removes the shards
(BUILD_NOTES.md, "Preparing VoxCeleb at scale").
"""

import os
import sys

from absl import app, logging

from keras_sf2f.cli import run_absl_tool
from keras_sf2f.config.groups import PrepareOptions
from keras_sf2f.flags import ToolFlags

FLAGS = ToolFlags("prepare_data")


def corpus_spec(options: PrepareOptions):
    """The procedural corpus the data preparation options describe."""
    from keras_sf2f.data.corpus import CorpusSpec  # noqa: PLC0415 - kept out of --help
    return CorpusSpec(seed=options.corpus_seed, num_identities=options.corpus_identities,
                      utterances_per_identity=options.utterances_per_identity,
                      images_per_identity=options.images_per_identity,
                      num_faceid_identities=options.faceid_identities,
                      faceid_images_per_identity=options.faceid_images_per_identity,
                      face_quality=options.face_quality,
                      extra_train_identities=options.extra_train_identities)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.data_dir:
        raise app.UsageError("--data_dir is required: where to write the prepared records")
    if FLAGS.verify:
        return verify(FLAGS.data_dir)
    sharded = FLAGS.shard_index is not None or (FLAGS.num_shards is not None
                                                and not FLAGS.merge_shards)
    if sharded or FLAGS.merge_shards:
        if FLAGS.data_source != "voxceleb" and not FLAGS.merge_shards:
            raise app.UsageError("--shard_index/--num_shards shard a VoxCeleb preparation: "
                                 "they need --data_source=voxceleb")
        if FLAGS.merge_shards and FLAGS.shard_index is not None:
            raise app.UsageError("--merge_shards merges all shards: drop --shard_index")
        if sharded and (FLAGS.shard_index is None or FLAGS.num_shards is None):
            raise app.UsageError("--shard_index and --num_shards go together: give both")
        if sharded and FLAGS.shard_index >= FLAGS.num_shards:
            raise app.UsageError(f"--shard_index must be in 0..{FLAGS.num_shards - 1} "
                                 f"(--num_shards={FLAGS.num_shards}), got {FLAGS.shard_index}")
    logging.set_verbosity(logging.INFO)
    # Imported here, not at the top: corpus workers are spawned processes that re-import
    # this script, and they should not pay for importing TensorFlow.
    from keras_sf2f.data import prepare  # noqa: PLC0415
    if FLAGS.merge_shards:
        try:
            info = prepare.merge_voxceleb_shards(FLAGS.data_dir, num_shards=FLAGS.num_shards,
                                                 keep_shards=FLAGS.keep_shards)
        except prepare.ShardError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"Merged {info['merged_shards']} shards into {os.path.abspath(FLAGS.data_dir)}:")
        print(prepare.describe(info))
        return 0
    if FLAGS.data_source == "procedural":
        spec = corpus_spec(FLAGS.config(PrepareOptions))
        info = prepare.prepare_procedural(
            FLAGS.data_dir, spec, num_workers=FLAGS.num_workers,
            min_frames=FLAGS.min_speech_frames, utterance_shards=FLAGS.utterance_shards,
            voice_quality_channels=FLAGS.voice_quality_channels)
    else:
        if not FLAGS.voxceleb_root:
            raise app.UsageError("--data_source=voxceleb needs --voxceleb_root")
        info = prepare.prepare_voxceleb(
            FLAGS.voxceleb_root, FLAGS.data_dir, audio_source=FLAGS.audio_source,
            face_type=FLAGS.face_type, min_frames=FLAGS.min_speech_frames,
            utterance_shards=FLAGS.utterance_shards, num_workers=FLAGS.num_workers,
            shard_index=FLAGS.shard_index, num_shards=FLAGS.num_shards,
            voice_quality_channels=FLAGS.voice_quality_channels)
    shard = info.get("shard")
    if shard:
        done = shard["complete"] == shard["num_shards"]
        print(f"Prepared shard {shard['index']} of {shard['num_shards']} in "
              f"{os.path.abspath(shard['directory'])} ({shard['complete']} of "
              f"{shard['num_shards']} shards complete; {'now' if done else 'when all are,'} "
              f"run prepare_data.py --merge_shards --data_dir={FLAGS.data_dir}):")
        print(prepare.describe(info))
        return 0
    print(f"Prepared {FLAGS.data_source} data in {os.path.abspath(FLAGS.data_dir)}:")
    print(prepare.describe(info))
    for path in info.get("previews", []):
        print(f"  look at: {os.path.abspath(path)}")


def verify(data_dir: str) -> int:
    """--verify: 0 when every shard is as prepared, else 1 (problems on stderr)."""
    from keras_sf2f.data import records  # noqa: PLC0415 - imports TensorFlow
    if not os.path.isdir(data_dir):
        print(f"error: --data_dir={data_dir} does not exist", file=sys.stderr)
        return 1
    try:
        result = records.verify_data_dir(data_dir)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for problem in result["problems"]:
        print(f"bad: {problem}", file=sys.stderr)
    how = ("sha256 against dataset.json" if result["checksums"] else
           "every record read (this preparation recorded no checksums)")
    if result["problems"]:
        print(f"{data_dir}: {len(result['problems'])} problem(s) in {result['checked']} "
              f"shards ({how}); prepare the data again or restore the files named above",
              file=sys.stderr)
        return 1
    print(f"{data_dir}: all {result['checked']} shards OK ({how})")
    return 0


def run():
    """sf2f-prepare-data and trainers/prepare_data.py."""
    run_absl_tool(__name__)
