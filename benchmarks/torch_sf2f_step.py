"""The SF2F training step in PyTorch, for throughput comparisons (benchmarks/bench_training.py).

    python benchmarks/torch_sf2f_step.py --flagfile=configs/sf2f_64.cfg --bench_batch_size=64 \
        [--bench_precision=float32|mixed_bfloat16] [--bench_face_network=full|small] \
        [--bench_threads=N] [--bench_steps=5 --bench_warmup=1]

Prints one ``RESULT {json}`` line: steps/s, CPU time per step, the first step's time and the
FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and
convolutions, forward and backward, as executed).

The modules are the project's independent PyTorch definitions of the reference architecture
(``tests/torch_reference.py``, ``tests/torch_facenet.py``, written for the parity
tests). The step is the one ``keras_sf2f.training.trainer.GanTrainer`` runs, with the
reference's loss definitions and stage-2 rules, NCHW / NCL:

1. generator update: generator forward in train mode (stage 2: eval mode, only the fuser
   trainable); per output resolution ``l1_weight * L1`` + ``gan_weight * bce(D_img(fake), 1)`` +
   ``ac_weight * (CE(C_id(fake), y) + bce(D_ac(fake), 1))`` + ``perceptual_weight *`` the FaceNet
   perceptual loss (denormalise, clamp, standardise, VGG-box crop, 140x140 align-corners resize,
   ``sum_k w_k mean|f_k(fake) - f_k(real)|``, real features without gradient); one Adam step;
2. discriminator update on the same batch with the fakes detached, real and fake as separate
   forward passes (train-mode BatchNorm): ``bce(D(real),1) + bce(D(fake),0)`` per
   discriminator plus ``CE(C_id(real), y)`` for the identity classifiers; one Adam step each.

Like the Keras step -- and unlike the reference script -- the generator update computes no
weight gradients for the discriminators or the frozen face network (the reference leaves
``requires_grad`` on for both, which costs one more weight-gradient pass
through each). This is therefore the *efficient* PyTorch version of the step, the fair
opponent for a speed comparison.

This process never imports TensorFlow (asserted), so the two frameworks never share a process
or its thread pools.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags

from bench_common import tests_module  # beside this script

# With --bench_config_json (what bench_training.py passes) the configuration flags are not
# defined at all: their validator imports Keras, and with it TensorFlow.
_CONFIG_FROM_JSON = any(a.startswith("--bench_config_json") for a in sys.argv)
if not _CONFIG_FROM_JSON:
    from keras_sf2f import flags as sf2f_flags  # noqa: E402
    sf2f_flags.define_groups(sf2f_flags.tool_groups("train"), flags.FLAGS)

flags.DEFINE_string("bench_config_json", None, "The configuration as JSON "
                    "(keras_sf2f.training.config.TrainConfig.to_dict()); without it the "
                    "configuration flags (--flagfile=configs/<name>.cfg) are read, which imports "
                    "TensorFlow through their validator.")
flags.DEFINE_integer("bench_batch_size", 64, "Global batch size.")
flags.DEFINE_enum("bench_precision", "float32", ["float32", "mixed_bfloat16"],
                  "float32, or bfloat16 autocast (torch.autocast('cpu', torch.bfloat16)) around "
                  "every forward pass with the losses in float32.")
flags.DEFINE_enum("bench_face_network", "full", ["full", "small"],
                  "Perceptual-loss face network: 'full' InceptionResnetV1 (the reference's) or "
                  "'small' (FaceNet.small's topology: width 0.25, repeats 1/2/1, 128-d).")
flags.DEFINE_integer("bench_threads", 0, "torch.set_num_threads (0: all usable cores).")
flags.DEFINE_integer("bench_steps", 5, "Timed steps.")
flags.DEFINE_integer("bench_warmup", 1, "Untimed steps after the first one.")
flags.DEFINE_integer("bench_fuser_windows", 0, "Windows per identity for fuser configurations "
                     "(0: the configuration's --fuser_windows).")
flags.DEFINE_integer("bench_frames", 125, "Mel frames per crop / window.")
flags.DEFINE_bool("bench_count_flops", True, "Count one step's FLOPs (an extra, untimed step).")
FLAGS = flags.FLAGS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_BOX = (0.235, 0.195, 0.765, 0.915)  # left, top, right, bottom
FACENET_INPUT_SIZE = 140


def _slope(activation: str):
    text = activation.strip().lower()
    if text == "none":
        return None
    if text == "relu":
        return 0.0
    if text == "leakyrelu":
        return 0.01
    if text.startswith("leakyrelu-"):
        return float(text[len("leakyrelu-"):])
    raise ValueError(f"unsupported activation {activation!r}")


class TorchSf2fStep:
    """Models, optimizers and one generator + discriminator update (see the module docstring).

    ``config`` is a ``keras_sf2f.training.config.TrainConfig``; ``step(batch)`` takes
    ``(images [B,3,S,S], mels [B,40,L] or [B,N,40,L], labels [B])`` and returns the generator's
    total loss as a float.
    """

    def __init__(self, config, face_network: str = "full", precision: str = "float32"):
        import torch  # noqa: PLC0415
        facenet = tests_module("torch_facenet")
        ref = tests_module("torch_reference")

        self.torch = torch
        self.config = config
        self.precision = precision
        m = config.model
        if m.decoder == "upconv_64":
            decoder, self.resolutions = ref.UpsamplingDecoderRef(m.embedding_dim), (64,)
        elif m.decoder == "upconv_multires":
            decoder = ref.UpsamplingDecoderRef(m.embedding_dim, multires=True)
            self.resolutions = (64, 128)
        elif m.decoder == "deconv_64":
            decoder = ref.DeconvDecoderRef(m.embedding_dim, tuple(m.deconv_decoder_channels))
            self.resolutions = (64,)
        else:
            raise ValueError(f"unsupported decoder {m.decoder!r}")
        encoder = ref.VoiceEncoderRef(inception=m.encoder == "inception",
                                      channels=tuple(m.encoder_channels), dim=m.embedding_dim,
                                      cin=m.num_mel_bins, fuser=m.fuser == "attention",
                                      add_noise=m.encoder_add_noise)
        self.generator = ref.GeneratorRef(encoder, decoder)
        self.fuser_stage = bool(config.train_fuser_only)
        if self.fuser_stage:
            if m.fuser != "attention":
                raise ValueError("train_fuser_only needs the attention fuser")
            # Stage 2 as the Keras trainer implements it: frozen BatchNorm, fuser trainable.
            self.generator.eval()
            for name, parameter in self.generator.named_parameters():
                parameter.requires_grad_("attn_fuser" in name)
        else:
            self.generator.train()
        self.generator_parameters = [p for p in self.generator.parameters() if p.requires_grad]

        if m.discriminator_padding != "valid":
            raise ValueError("the PyTorch stand-ins build 'valid' discriminators only")
        self.image_discriminators, self.identity_classifiers = {}, {}
        for res in self.resolutions:
            normalization = getattr(m, f"discriminator_normalization_{res}")
            slope = _slope(getattr(m, f"discriminator_activation_{res}"))
            arch = getattr(m, f"image_discriminator_arch_{res}")
            if arch and config.gan_weight > 0:
                self.image_discriminators[res] = ref.PatchDiscriminatorRef(
                    arch, normalization, slope).train()
            arch = getattr(m, f"identity_classifier_arch_{res}")
            if arch and config.ac_weight > 0:
                self.identity_classifiers[res] = ref.AcDiscriminatorRef(
                    arch, m.num_train_identities, normalization, slope).train()

        self.face_network = None
        if config.perceptual_weight > 0:
            if face_network == "full":
                net = facenet.TorchInceptionResnetV1(embedding_dim=512)
            elif face_network == "small":
                net = facenet.TorchInceptionResnetV1(embedding_dim=128, width_multiplier=0.25,
                                                     repeats=(1, 2, 1))
            else:
                raise ValueError(f"unknown face network {face_network!r}")
            self.face_network = net.eval().requires_grad_(False)

        def adam(parameters):
            return torch.optim.Adam(parameters, lr=config.learning_rate,
                                    betas=(config.adam_beta1, config.adam_beta2),
                                    eps=config.adam_epsilon)

        self.generator_optimizer = adam(self.generator_parameters)
        self.image_parameters = [p for d in self.image_discriminators.values()
                                 for p in d.parameters()]
        self.identity_parameters = [p for c in self.identity_classifiers.values()
                                    for p in c.parameters()]
        self.image_optimizer = adam(self.image_parameters) if self.image_parameters else None
        self.identity_optimizer = (adam(self.identity_parameters) if self.identity_parameters
                                   else None)
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    # -- losses -------------------------------------------------------------------------------

    def _autocast(self):
        import contextlib  # noqa: PLC0415
        if self.precision == "mixed_bfloat16":
            return self.torch.autocast("cpu", dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def _bce(self, logits, target: float):
        logits = logits.float()
        return self.torch.nn.functional.binary_cross_entropy_with_logits(
            logits, self.torch.full_like(logits, target))

    def _cross_entropy(self, logits, labels):
        return self.torch.nn.functional.cross_entropy(logits.float(), labels)

    def _facenet_inputs(self, images):
        pixels = ((images * self.std + self.mean) * 255.0).clamp(0.0, 255.0)
        x = (pixels - 127.5) / 128.0
        height, width = x.shape[-2:]
        left, top, right, bottom = VGG_BOX
        x = x[:, :, int(top * height):int(bottom * height) + 1,
              int(left * width):int(right * width) + 1]
        return self.torch.nn.functional.interpolate(
            x, size=(FACENET_INPUT_SIZE, FACENET_INPUT_SIZE), mode="bilinear",
            align_corners=True)

    def _face_features(self, images):
        with self._autocast():
            return self.face_network.hidden_states(self._facenet_inputs(images))[:4]

    def _perceptual(self, fake, real):
        with self.torch.no_grad():
            real_features = self._face_features(real)
        fake_features = self._face_features(fake)
        total = 0.0
        for weight, f, r in zip(self.config.perceptual_layer_weights, fake_features,
                                real_features):
            if weight > 0:
                total = total + weight * (f.float() - r.float()).abs().mean()
        return total

    # -- the step -----------------------------------------------------------------------------

    def _targets(self, images):
        top = images.shape[-1]
        return {res: images[:, :, ::top // res, ::top // res] for res in self.resolutions}

    def step(self, batch) -> float:
        images, mels, labels = batch
        config = self.config
        real = self._targets(images)

        # 1. generator update; the discriminators take no weight gradients here.
        for parameter in self.image_parameters + self.identity_parameters:
            parameter.requires_grad_(False)
        with self._autocast():
            outputs, _ = self.generator(mels)
        if not isinstance(outputs, (tuple, list)):
            outputs = (outputs,)
        fake = {res: image.float() for res, image in zip(self.resolutions, outputs)}
        total = 0.0
        for res in self.resolutions:
            if config.l1_weight > 0:
                total = total + config.l1_weight * (fake[res] - real[res]).abs().mean()
            if res in self.image_discriminators:
                with self._autocast():
                    logits = self.image_discriminators[res](fake[res])
                total = total + config.gan_weight * self._bce(logits, 1.0)
            if res in self.identity_classifiers:
                with self._autocast():
                    real_fake, identity = self.identity_classifiers[res](fake[res])
                total = total + config.ac_weight * (self._cross_entropy(identity, labels) +
                                                    self._bce(real_fake, 1.0))
            if self.face_network is not None:
                total = total + config.perceptual_weight * self._perceptual(fake[res], real[res])
        self.generator_optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.generator_optimizer.step()
        for parameter in self.image_parameters + self.identity_parameters:
            parameter.requires_grad_(True)

        # 2. discriminator updates on the same batch, fakes detached.
        if not (self.image_parameters or self.identity_parameters):
            return float(total.detach())
        fake = {res: image.detach() for res, image in fake.items()}
        d_total = 0.0
        with self._autocast():
            d_outputs = []
            for res, discriminator in self.image_discriminators.items():
                d_outputs.append(("img", discriminator(real[res]), discriminator(fake[res]),
                                  None))
            for res, classifier in self.identity_classifiers.items():
                real_rf, real_id = classifier(real[res])
                fake_rf, _ = classifier(fake[res])
                d_outputs.append(("ac", real_rf, fake_rf, real_id))
        for _, real_logits, fake_logits, real_id in d_outputs:
            d_total = d_total + self._bce(real_logits, 1.0) + self._bce(fake_logits, 0.0)
            if real_id is not None:
                d_total = d_total + self._cross_entropy(real_id, labels)
        for optimizer in (self.image_optimizer, self.identity_optimizer):
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
        d_total.backward()
        for optimizer in (self.image_optimizer, self.identity_optimizer):
            if optimizer is not None:
                optimizer.step()
        return float(total.detach())


def synthetic_batch(config, batch_size: int, frames: int, windows: int, seed: int = 0):
    """Random images of the model's size, mel crops (or window stacks for fuser
    configurations) and identity labels, NCHW / NCL."""
    import torch  # noqa: PLC0415
    g = torch.Generator().manual_seed(seed)
    m = config.model
    images = torch.randn(batch_size, 3, m.image_size, m.image_size, generator=g)
    if m.fuser == "attention":
        mels = torch.randn(batch_size, windows, m.num_mel_bins, frames, generator=g)
    else:
        mels = torch.randn(batch_size, m.num_mel_bins, frames, generator=g)
    labels = torch.randint(0, m.num_train_identities, (batch_size,), generator=g)
    return images, mels, labels


def run(config, batch_size: int, precision: str, face_network: str, threads: int, steps: int,
        warmup: int, windows: int, frames: int = 125, count_flops: bool = True) -> dict:
    import torch  # noqa: PLC0415
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    trainer = TorchSf2fStep(config, face_network=face_network, precision=precision)
    built = time.perf_counter() - t0
    batch = synthetic_batch(config, batch_size, frames, windows)
    t0 = time.perf_counter()
    trainer.step(batch)
    first = time.perf_counter() - t0
    for _ in range(warmup):
        trainer.step(batch)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss = trainer.step(batch)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    flops = None
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415
        counter = FlopCounterMode(display=False)
        with counter:
            trainer.step(batch)
        flops = float(counter.get_total_flops())
    return {"framework": "torch", "torch_version": torch.__version__, "threads": threads,
            "precision": precision, "batch": batch_size, "face_network": face_network,
            "windows": windows if config.model.fuser == "attention" else None,
            "steps_per_s": steps / elapsed, "s_per_step": elapsed / steps,
            "cpu_s_per_step": cpu / steps, "build_s": built, "first_step_s": first,
            "flops_per_step": flops, "loss": loss,
            "tensorflow_imported": "tensorflow" in sys.modules}


def main(argv):
    del argv
    from keras_sf2f.training.config import TrainConfig  # noqa: PLC0415
    if FLAGS.bench_config_json:
        config = TrainConfig.from_mapping(json.loads(FLAGS.bench_config_json))
    else:
        config = sf2f_flags.build(TrainConfig, FLAGS)
    threads = FLAGS.bench_threads or len(os.sched_getaffinity(0))
    windows = FLAGS.bench_fuser_windows or config.fuser_windows
    result = run(config, FLAGS.bench_batch_size, FLAGS.bench_precision,
                 FLAGS.bench_face_network, threads, FLAGS.bench_steps, FLAGS.bench_warmup,
                 windows, FLAGS.bench_frames, FLAGS.bench_count_flops)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    app.run(main)
