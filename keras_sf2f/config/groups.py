"""The option groups of the tools' own settings (those no library dataclass holds), and the
options several groups share.

Each group is a dataclass of options (keras_sf2f/config/options.py); keras_sf2f/flags.py lists
which tools use which groups and derives their flags. Library dataclasses that are option groups
themselves: ``keras_sf2f.models.builder.ModelConfig``,
``keras_sf2f.training.config.TrainConfig``,
``keras_sf2f.training.face_identity_config.FaceIdentityConfig`` and
``keras_sf2f.curation.config.CurationConfig``. The tools turn the other groups into what the
library takes (e.g. ``CorpusSpec``, ``EvaluationConfig``) in keras_sf2f/cli/.

To add an option: add a field to its group here (or to one of those library dataclasses). Every
tool that uses the group gets the flag, in its --help, its flagfiles and its dataclass; nothing
else needs an edit.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from keras_sf2f.config.options import SharedOption, option

# ---------------------------------------------------------------------------------------------
# Options held by several groups: one declaration each, used as ``NAME.field()``.
# ---------------------------------------------------------------------------------------------

DATA_DIR = SharedOption(
    "data_dir", None,
    "Prepared data directory (TFRecord shards, splits.json, dataset.json): "
    "trainers/prepare_data.py writes it, the other tools read it. Export: by default the "
    "--data_dir of the run's flags.cfg (for the voice_typicality calibration); --data_dir= "
    "(empty) exports without voice_typicality.")
OUTPUT_DIR = SharedOption(
    "output_dir", None, "Directory the command writes its results to.")
CHECKPOINT_DIR = SharedOption(
    "checkpoint_dir", None,
    "The checkpoint to use: a training --model_dir, one of its best_<metric>/ "
    "sub-directories, an imported reference checkpoint (latest checkpoint used), or a "
    "checkpoint prefix (.../ckpt-1200). Its model configuration is the run's own (its "
    "flags.cfg); model flags given as well must agree with it, and describe only a checkpoint "
    "without one.")
FACE_NETWORK = SharedOption(
    "face_network", None,
    "Face network of the perceptual loss and of the face embeddings: the project's "
    "face-identity network (output of trainers/train_face_identity.py) or a .keras FaceNet "
    "file (export/import_facenet_weights.py, VGGFace2 weights).")
TRAIN_STEPS = SharedOption(
    "train_steps", 132000,
    "Total generator (= discriminator) updates; training stops there and a restart with a "
    "larger value continues. The reference's 12,000 epochs of ~11 steps (2,890 identities / "
    "256) are ~132k steps; its 50 fuser epochs ~550. Ablations: the steps of each stage-1 "
    "variant, only when given (else keras_sf2f.evaluation.ablations.DEFAULT_TRAIN_STEPS).",
    lower=1)
VOICE_QUALITY_CHANNELS = SharedOption(
    "voice_quality_channels", False,
    "Four voice-quality channels per 10 ms frame after the 40 log-mels (harmonicity, cepstral "
    "peak, log pitch, log energy; keras_sf2f/audio/voice_quality.py): prepare_data.py stores "
    "them in the records, and the voice encoder takes 44 channels (training, evaluation and the "
    "served graph compute or read them). Not in the reference: its encoder hears log-mels "
    "only. They carry the roughness of an ageing or breathy voice that the log-mels blur.")
EVAL_MAX_WINDOWS = SharedOption(
    "eval_max_windows", 20,
    "At most this many 1.25 s windows per identity, taken from the start of its speech, in "
    "training's validation and in the evaluation's all-windows protocol.", lower=1)
TYPICALITY_WARNING_BELOW = SharedOption(
    "typicality_warning_below", 0.05,
    "The voice_typicality below which clients warn that a voice is unlike the training "
    "voices (0.05: farther from every training identity than 95 % of the known voices). "
    "Export: recorded in the export's metadata. Client: give the export's value when it was "
    "exported with another (TF-Serving does not serve the metadata).", lower=0.0, upper=1.0)


# ---------------------------------------------------------------------------------------------
# Data preparation (trainers/prepare_data.py)
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class PrepareOptions:
    """What trainers/prepare_data.py reads and how it writes the records."""
    SECTION: ClassVar[str] = "data preparation"

    data_dir: str | None = DATA_DIR.field()
    data_source: str = option(
        "procedural",
        "What prepare_data.py reads: the embedded procedural corpus, or a VoxCeleb1/2 + "
        "HQ-VoxCeleb tree at --voxceleb_root.", choices=("procedural", "voxceleb"))
    corpus_seed: int = option(0, "Seed of the procedural corpus.", lower=0)
    corpus_identities: int = option(
        500,
        "Voice-face identities of the procedural corpus (split 80/10/10 into train/val/test by "
        "identity range).", lower=4)
    utterances_per_identity: int = option(
        5, "Procedural corpus: utterances per identity.", lower=1)
    images_per_identity: int = option(3, "Procedural corpus: faces per identity.", lower=1)
    faceid_identities: int | None = option(
        None,
        "Procedural corpus: identities (faces only, disjoint from the voice-face range) for "
        "training the face-identity network; default half of --corpus_identities.")
    faceid_images_per_identity: int = option(
        10, "Procedural corpus: faces per face-identity-network identity.", lower=2)
    voice_quality_channels: bool = VOICE_QUALITY_CHANNELS.field()
    extra_train_identities: int = option(
        0,
        "Procedural corpus: further voice-face identities for the train split, numbered after "
        "the faceid range, so the validation and test identities (and their figures) stay "
        "those of --corpus_identities. Training then has --num_train_identities = 80 % of "
        "--corpus_identities plus these.", lower=0)
    face_quality: str = option(
        "aligned",
        "Procedural corpus faces: 'aligned' (HQ-VoxCeleb-like) or 'in_the_wild' (unaligned, "
        "varied background and pose: the filtered-VGGFace analogue of the data-quality "
        "ablation).", choices=("aligned", "in_the_wild"))
    voxceleb_root: str | None = option(
        None, "Root of a VoxCeleb + HQ-VoxCeleb tree (see README, 'Real data').")
    audio_source: str = option(
        "wav",
        "VoxCeleb speech from raw audio (VAD + features computed here) or from the reference's "
        "pre-computed mel pickles (read with a restricted unpickler).",
        choices=("wav", "mel_pickles"))
    face_type: str = option(
        "masked", "HQ-VoxCeleb face folder: <subset>/<face_type>_faces/<Name>/.")
    min_speech_frames: int = option(
        100,
        "Utterances with fewer frames of speech after VAD (10 ms each) are skipped and "
        "counted; 100 = the shortest stage-1 training crop.", lower=1)
    num_workers: int = option(
        2,
        "Worker processes of prepare_data.py: they generate the procedural corpus, or read the "
        "VoxCeleb identities (decode, VAD, features, face PNGs); about one per core. The "
        "records are the same for any number.", lower=1)
    utterance_shards: int = option(4, "TFRecord shards per split for utterances.", lower=1)
    shard_index: int | None = option(
        None,
        "VoxCeleb: prepare only shard i (0..num_shards-1) of the identities, into "
        "<data_dir>/shards/<i>-of-<n>/, for a cluster's job array (one task per shard, all "
        "with the same flags and --data_dir on a shared disk, or copied together afterwards). "
        "Every shard decides the same split assignment from the meta CSVs / split.json and "
        "takes every n-th identity; a re-run of a shard starts it again from nothing. Then "
        "--merge_shards. Needs --num_shards.", lower=0)
    num_shards: int | None = option(
        None,
        "VoxCeleb: how many shards --shard_index counts (see there); with --merge_shards only "
        "needed when shards of several counts are present.", lower=1)
    merge_shards: bool = option(
        False,
        "Prepare nothing; merge the complete shards under <data_dir>/shards/ into the "
        "prepared layout of --data_dir (the same records, labels and dataset.json as one "
        "unsharded run with those options; needs no --voxceleb_root). Refuses, naming the "
        "shards, when one is missing, incomplete or made with other options or from another "
        "state of the tree. Removes the shard directories when done unless --keep_shards.")
    keep_shards: bool = option(
        False,
        "--merge_shards: keep <data_dir>/shards/ after a successful merge (by default it is "
        "removed: it holds a second copy of every record).")
    verify: bool = option(
        False,
        "Prepare nothing; re-check the prepared --data_dir against the sha256 per shard "
        "recorded at preparation (older directories: read every record) and name bad shards. "
        "Exit status 1 if any.")


# ---------------------------------------------------------------------------------------------
# The face-identity network (trainers/train_face_identity.py)
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class FaceIdentityOptions:
    """Where trainers/train_face_identity.py reads the prepared data and writes the network
    (the project's own FaceNet-small identity network for the perceptual loss and evaluation,
    trained on the data's faceid split); its training options are
    keras_sf2f.training.face_identity_config.FaceIdentityConfig (--face_net_*). Training's
    --face_network points at its --output_dir."""
    SECTION: ClassVar[str] = "face-identity network"

    data_dir: str | None = DATA_DIR.field()
    output_dir: str | None = OUTPUT_DIR.field()


# ---------------------------------------------------------------------------------------------
# Evaluation (trainers/evaluate.py; the protocol also trainers/ablations.py)
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class EvalProtocolOptions:
    """How generated faces are scored: the seed's random-crop protocol (also the ablations')."""
    SECTION: ClassVar[str] = "evaluation protocol"

    eval_split: str = option("test", "Split of --data_dir to evaluate on.")
    eval_durations: tuple[float, ...] = option(
        (1.25, 5.0), "Crop durations in seconds for the seed's random-crop protocol.")
    eval_runs: int = option(
        10,
        "Random crops per identity and duration; run r uses crop r. Ablations: only when "
        "given (else keras_sf2f.evaluation.ablations.DEFAULT_EVAL_RUNS).", lower=1)
    eval_seed: int = option(
        0, "Seed of the evaluation crops (evaluation is deterministic for a given seed).",
        lower=0)
    eval_dlib: bool = option(
        True, "Also score with dlib's pretrained recogniser (independent of training) when it "
        "is installed.")
    eval_max_windows: int = EVAL_MAX_WINDOWS.field()


@dataclasses.dataclass
class EvaluateOptions:
    """What trainers/evaluate.py evaluates, against what, and where the report goes."""
    SECTION: ClassVar[str] = "evaluation"

    data_dir: str | None = DATA_DIR.field()
    checkpoint_dir: str | None = CHECKPOINT_DIR.field()
    face_network: str | None = FACE_NETWORK.field()
    report_dir: str | None = option(
        None, "Where evaluate.py writes report.md, PNGs and JSON.")
    eval_fuser_protocol: bool = option(
        True, "Also evaluate on all of each identity's 125-frame windows (one run).")
    reference_ground_truth: bool = option(
        False,
        "Use the reference's ground truth (mean of unit embeddings, not re-normalised) "
        "instead of the seed's.")
    eval_untrained_baseline: bool = option(
        True,
        "Also evaluate the same architecture freshly initialised, to show what training "
        "added.")
    eval_oracle: bool = option(
        True,
        "On the procedural corpus, also score the voice-attribute oracle: each test "
        "identity's voice-linked attributes drawn with another identity's face-only ones "
        "(what a perfect voice-only model could reach with each embedder).")
    eval_detection: bool = option(
        True,
        "Report the face detection rate: the fraction of faces in which dlib's HOG frontal "
        "face detector (upscaled to 256 px) finds a face, when dlib is installed "
        "(keras_sf2f/evaluation/detection.py).")
    eval_diversity: bool = option(
        True,
        "Report the diversity ratio of the generated faces against the ground truth's, the "
        "number of templates and whether faces collapsed "
        "(keras_sf2f/evaluation/diversity.py).")
    eval_attributes: bool = option(
        True,
        "Train an attribute reader on the face-only identities' photos (about 30 s on 2 "
        "cores) and report how well the faces show each known attribute; procedural corpus, "
        "or gender on VoxCeleb (attribute_reader.py). Skipped with a note when the data has "
        "no attributes.")
    reference_galleries: bool = option(
        False,
        "Recall within the reference's three fixed galleries of 100 identities ([0,100), "
        "[100,200), [200,300) of the split; chance K/100) at its K values 1,2,5,10,20,50, so "
        "that numbers compare with the reference's. A split of 100-299 identities uses the "
        "complete galleries among the three; fewer than 100 is an error (the chance level "
        "would differ). Default: retrieval within the whole split (chance K/N).")
    baseline_checkpoint_dir: str | None = option(
        None,
        "A second checkpoint (e.g. voice2face trained with configs/voice2face_64.cfg) "
        "evaluated beside --checkpoint_dir and shown as the third column of the Figure-1 grid. "
        "Its model configuration comes from its flags.cfg (or --baseline_flagfile).")
    baseline_flagfile: str | None = option(
        None,
        "Flagfile describing --baseline_checkpoint_dir's model when its directory has no "
        "flags.cfg (e.g. configs/voice2face_64.cfg).")
    eval_model_name: str = option(
        "SF2F", "Name of --checkpoint_dir's model in the report, figures and TensorBoard.")
    baseline_name: str = option(
        "voice2face", "Name of --baseline_checkpoint_dir's model in the report and figures.")
    summary_dir: str | None = option(
        None,
        "TensorBoard directory for the evaluation metrics (default <report_dir>/tensorboard). "
        "Tags are training's validation tags (Validation/recall_at_10, ...), so with "
        "--summary_dir=<model_dir>/eval the points sit on the training run's validation "
        "charts.")


# ---------------------------------------------------------------------------------------------
# Ablations (trainers/ablations.py)
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class AblationOptions:
    """The seed's Table 2 and 3 on the embedded corpus: which variants, from which flagfiles."""
    SECTION: ClassVar[str] = "ablations"

    output_dir: str | None = OUTPUT_DIR.field()
    data_dir: str | None = DATA_DIR.field()
    face_network: str | None = FACE_NETWORK.field()
    train_steps: int = TRAIN_STEPS.field()
    variants: tuple[str, ...] = option(
        (),
        "Variants to run (default: all of the recipe's). Table 3: sf2f, sf2f_fuser, voice2face; "
        "Table 2 of the reference recipe: sf2f, no_l1, no_gan, no_ac, no_perceptual, "
        "baseline_encoder, baseline_decoder, low_quality_faces, generator_ema, "
        "adversarial_delay, demo_recipe, demo_no_pretrain; of the demo recipe: sf2f, no_l1, "
        "no_perceptual, no_gradient_l1, baseline_encoder, baseline_decoder, "
        "low_quality_faces, no_pretrain, no_decoder_pretrain, with_ac, with_gan, "
        "generator_ema, voice_quality. Variants a chosen one depends on are run too.")
    ablation_recipe: str = option(
        "reference",
        "What full SF2F is: 'reference' (the reference's L1 + GAN + AC + perceptual losses, "
        "each 'w/o' row removing one; 600 steps unless --train_steps) or 'demo' (the demo "
        "flagfile's own recipe, decoder and voice pre-training then L1 + perceptual, at its "
        "length; rows add the GAN and AC terms instead of removing them).",
        choices=("reference", "demo"))
    ablation_seed: int | None = option(
        None, "--seed of every variant's training (default: the flagfiles'); run the command "
        "once per seed, each into its own --output_dir, to see the spread over training.")
    ablation_config: str = option(
        "configs/demo.cfg",
        "The flagfile of full SF2F (stage 1), which every Table-2 variant modifies by one "
        "change; it also prepares missing data and trains a missing face-identity network.")
    ablation_fuser_config: str = option(
        "configs/demo_fuser.cfg",
        "Stage-2 (fuser) flagfile applied on top of --ablation_config.")
    ablation_voice2face_config: str = option(
        "configs/demo_voice2face.cfg", "Flagfile of the voice2face baseline (Table 3).")
    wild_data_dir: str | None = option(
        None,
        "Prepared data with in-the-wild faces for the low-quality-faces variant (default "
        "<output_dir>/data_in_the_wild; prepared from --data_dir's corpus settings with "
        "--face_quality=in_the_wild when missing).")
    fuser_steps: int | None = option(
        None, "Stage-2 (fuser) training steps (default: the fuser flagfile's).", lower=1)
    ablation_jobs: int = option(
        1,
        "Variants trained at once (each training already uses every core; more than 1 only "
        "pays when start-up dominates, e.g. tiny tests).", lower=1)
    ablation_tables_only: bool = option(
        False,
        "Train and evaluate nothing: rewrite ablations.md / .csv, the Figure-1 pictures and "
        "the results page of --output_dir from the variants finished so far (unfinished ones "
        "are marked 'not run'; the oracle's reference rows only when every variant is done). "
        "For refreshing the tables after a code update, or looking at a run still in "
        "progress (which rewrites them again after its next variant).")


# ---------------------------------------------------------------------------------------------
# Describing a model (trainers/describe_model.py)
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class DescribeOptions:
    """What trainers/describe_model.py describes and how it prints it."""
    SECTION: ClassVar[str] = "describe"

    checkpoint_dir: str | None = CHECKPOINT_DIR.field()
    json: bool = option(
        False,
        "Print one JSON object of per-module parameter counts instead of the human summary.")


# ---------------------------------------------------------------------------------------------
# Export and serving (export/export_savedmodel.py, export/serve.py, export/client.py)
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ExportOptions:
    """The SavedModel export/export_savedmodel.py writes for TF-Serving."""
    SECTION: ClassVar[str] = "export"

    checkpoint_dir: str | None = CHECKPOINT_DIR.field()
    export_dir: str | None = option(
        None,
        "The model directory <base>/<name> that TF-Serving serves; the version is written to "
        "<base>/<name>/<version>/.")
    version: int | None = option(
        None,
        "Version number to write (default: the highest existing version + 1). An existing "
        "version is never overwritten.", lower=1)
    max_audio_seconds: float = option(
        60.0,
        "Longest audio the served model accepts (longer input is refused with a clear "
        "error).", lower=1.3)
    serving_max_windows: int = option(
        20,
        "Most 125-frame (1.25 s) speech windows fused per request, taken from the start of "
        "the speech (20: the evaluation's window stacks); 0 uses every window of the audio.",
        lower=0)
    verify_export: bool = option(
        True,
        "Reload the SavedModel and replay its warm-up requests before publishing the version.")
    typicality_warning_below: float = TYPICALITY_WARNING_BELOW.field()
    data_dir: str | None = DATA_DIR.field()


@dataclasses.dataclass
class ServeOptions:
    """export/serve.py, the development server (TF-Serving's REST API, not for production)."""
    SECTION: ClassVar[str] = "development server"

    model_base_path: str | None = option(
        None, "The model directory <base>/<name> holding numeric versions.")
    model_name: str | None = option(
        None,
        "The model name in the URLs (/v1/models/<name>); default: the last component of "
        "--model_base_path.")
    rest_api_port: int = option(8501, "REST port.", lower=0, upper=65535)
    host: str = option(
        "127.0.0.1",
        "Address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes the development "
        "server to the network).")
    file_system_poll_wait_seconds: float = option(
        2.0, "How often to look for new versions under --model_base_path.", lower=0.05)
    max_request_bytes: int = option(
        64 * 1024 * 1024, "Largest request body accepted (larger: HTTP 413).", lower=1024)
    concurrent_model_calls: int = option(
        1, "Model calls running at once (others wait).", lower=1)
    max_num_load_retries: int = option(
        5,
        "Times a version that failed to load is tried again (TF-Serving's flag of the same "
        "name), e.g. because its files were still being copied.", lower=0)
    load_retry_interval_micros: int = option(
        60 * 1000 * 1000,
        "Microseconds between load retries (TF-Serving's flag of the same name).", lower=0)
    max_inflight_request_bytes: int | None = option(
        None,
        "Request bodies being read, parsed and run at once, in bytes (Content-Length summed; "
        "default: --max_request_bytes). Parsing takes 3-7x a body's size in memory; a request "
        "that does not fit waits (first come, first served).", lower=1024)
    max_queue_seconds: float = option(
        120.0,
        "How long a request waits for room in --max_inflight_request_bytes before it gets "
        "HTTP 503 with Retry-After.", lower=0.001)
    read_timeout_seconds: float = option(
        30.0,
        "A request's line and headers, then its body, must each arrive within this many "
        "seconds (else HTTP 408 and the connection is closed); also how long an idle "
        "kept-alive connection is kept.", lower=0.001)
    max_items_per_request: int = option(
        32,
        "Most items (audio files, waveform rows, mel items) in one request; more is HTTP 400 "
        "(the model would run them as one batch).", lower=1)


@dataclasses.dataclass
class ClientOptions:
    """export/client.py (argparse, no absl: it runs without TensorFlow)."""
    SECTION: ClassVar[str] = "client"

    server: str | None = option(
        None,
        "REST endpoint of TF-Serving or of the development server, e.g. "
        "http://localhost:8501.")
    grpc: str | None = option(
        None, "Use gRPC instead of REST, e.g. localhost:8500 (needs tensorflow-serving-api).")
    model: str | None = option(None, "The served model's name.")
    model_version: int | None = option(
        None, "Ask for this version (default: the server's latest).", lower=1)
    audio: tuple[str, ...] = option(
        (), "Audio files to turn into faces, comma separated (may be repeated).")
    out: str | None = option(None, "Directory to write <audio stem>.png files to.")
    request_timeout: float = option(
        300.0, "Seconds to wait for each answer.", lower=0.1)
    typicality_warning_below: float = TYPICALITY_WARNING_BELOW.field()


# ---------------------------------------------------------------------------------------------
# Importers (export/import_reference_checkpoint.py, export/import_facenet_weights.py)
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ReferenceImportOptions:
    """export/import_reference_checkpoint.py: the PyTorch file and where the import goes (the
    model options describe the checkpoint's configuration)."""
    SECTION: ClassVar[str] = "reference checkpoint import"

    reference_checkpoint: str | None = option(
        None,
        "A checkpoint written by the official PyTorch SF2F code (e.g. best_L1_with_model.pt: "
        "a dict with model_state, d_img_state_<i>, d_ac_state_<i>, ...).")
    allow_missing_fuser: bool = option(
        False,
        "Import a stage-1 reference checkpoint (no fuser weights) into a configuration with "
        "--fuser=attention; the fuser keeps its fresh initialisation (the reference's stage-2 "
        "start).")
    output_dir: str | None = OUTPUT_DIR.field()


@dataclasses.dataclass
class FacenetImportOptions:
    """export/import_facenet_weights.py: facenet-pytorch weights into a Keras FaceNet file."""
    SECTION: ClassVar[str] = "FaceNet weights import"

    state_dict: tuple[str, ...] = option(
        (),
        "facenet-pytorch state-dict file(s), comma-separated (merged; e.g. SF2F's features + "
        "logits files).")
    output: str | None = option(
        None, "Output file: *.keras (model) or *.weights.h5 (weights).")
    include_logits: bool = option(True, "Import the logits head if the state dict has one.")
    input_size: int = option(140, "Input height/width the model is built for.")


# ---------------------------------------------------------------------------------------------
# Face curation (trainers/curate_faces.py, trainers/review_faces.py)
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class CurationOptions:
    """What trainers/curate_faces.py curates, where to, and in how many processes; the filters
    and outputs of HQ-VoxCeleb-style curation (keras_sf2f/curation/) are
    keras_sf2f.curation.config.CurationConfig."""
    SECTION: ClassVar[str] = "face curation"

    input_dir: str | None = option(
        None,
        "Raw photos, one folder of images per identity (<input_dir>/<Name>/*), any size and "
        "common format.")
    output_dir: str | None = OUTPUT_DIR.field()
    curation_shards: int = option(
        1, "Split the identities between this many processes sharing one --output_dir.",
        lower=1)
    curation_shard_index: int = option(0, "This process's shard.", lower=0)


@dataclasses.dataclass
class ReviewOptions:
    """trainers/review_faces.py: the human review page and the final dataset's export."""
    SECTION: ClassVar[str] = "face review"

    curated_dir: str | None = option(
        None,
        "The directory curate_faces.py wrote (its --output_dir: manifest.sqlite, aligned/).")
    review_host: str = option(
        "127.0.0.1", "Address the review page is served on (127.0.0.1: this machine only).")
    review_port: int = option(
        8765, "Port of the review page (0: any free one).", lower=0, upper=65535)
    review_min_kept: int = option(
        1, "Identities keeping fewer images are dropped from the dataset.", lower=1)
    review_max_kept: int = option(7, "Most images kept per identity.", lower=1)
    dataset_dir: str | None = option(
        None,
        "Root the final dataset is exported to (default <curated_dir>/dataset); it gets "
        "<dataset_dir>/<subset>/masked_faces/<Name>/ and origin_faces/<Name>/, the layout "
        "prepare_data.py --data_source=voxceleb reads under --voxceleb_root.")
    dataset_subset: str = option(
        "vox1", "Subset folder of the exported dataset (vox1 or vox2).")
    dataset_image_size: int = option(
        224, "Which aligned size is exported (one of --curation_sizes).", lower=16)
    export_only: bool = option(
        False, "Export the dataset from the saved choices and exit (no server).")
