"""The SF2F GAN step: models, optimizers and one distributed generator + discriminator update.

``GanTrainer(config, strategy)`` builds, under ``strategy.scope()``, the generator and the
discriminators of ``config.model`` (``keras_sf2f.models.builder``), the face network of the
perceptual loss, and one Adam per trained group -- the generator, the image (patch)
discriminators and the identity classifiers (AC discriminators) -- and creates every optimizer
slot up front (Keras 3 creates them lazily, which would trace the step twice).

``trainer.train_step(iterator)`` (a ``tf.function`` traced once) takes the next global batch
from a distributed iterator (``trainer.distribute(dataset_fn)``) and runs, per replica, the
reference's iteration:

1. generator forward (train mode; stage 2: inference mode, see below), the generator
   objective summed over output resolutions -- L1 to the real face nearest-downsampled to that
   resolution, the patch-GAN term, the AC identity cross-entropy and AC real/fake term (both
   ``ac_weight``), the FaceNet perceptual loss -- and one Adam step of the generator. The
   discriminators run in train mode on the fake batch here (as in the reference: batch
   statistics of fakes);
2. on the same batch, with the fakes of step 1 detached: each discriminator sees the real batch
   and the fake batch as two separate forward passes (batch statistics are per pass, as in the
   reference); image D loss ``bce(real,1)+bce(fake,0)``; AC loss the same on its real/fake head
   plus the identity cross-entropy of the real images only, weight 1; one Adam step each.

Every loss is a per-example vector averaged over the **global** batch
(``losses.average_over_global_batch``), so the summed gradients of all replicas are those of
the global-batch mean. With several replicas, BatchNorm normalises with per-replica batch
statistics (as the reference's DataParallel; ``sync_batch_norm``: with the global batch's,
all-reduced in every BatchNorm layer of the trained models) and the moving statistics are
averaged over the replicas after every step, so all workers hold identical weights. Returned
values are global scalars (summed over replicas): weighted loss terms under ``loss/``
(generator) and ``d_loss/`` (discriminators), accuracies under ``d_acc/``. A loss weight <= 0
switches its term off; a discriminator whose terms are all off is neither run nor trained.

Stage 2 (``train_fuser_only``): only the fuser's variables are in the generator optimizer; the
encoder and decoder are frozen and called with ``training=False`` (BatchNorm uses and keeps its
moving statistics -- the reference's intent; its accidental switch back to train mode, a side
effect of its DataParallel wrapper at the first visualisation, is not reproduced). The
discriminators keep training, as in the reference.

Mixed precision (``mixed_bfloat16`` / ``mixed_float16``): layers compute in bfloat16 / float16
with float32 variables; the generated images are cast to float32 before any loss, and every loss
is computed in float32. ``mixed_float16`` also scales the losses dynamically (float16 gradients
underflow without it): each optimizer is a ``keras.optimizers.LossScaleOptimizer``, the
gradients are those of ``loss * scale``, and the optimizer unscales them; a step whose gradients
are not finite on *any* replica is skipped by that optimizer on every replica and its scale
halved (2^15 at first, doubled after 2000 good steps). The scales and counters are optimizer
variables, so checkpoints hold them and a resumed run continues with them.

Learning rates: the generator's and image discriminators' rates decay after
``--lr_decay_start_step`` (``learning_rate_schedule``); their Adams keep a learning-rate
variable that the step sets from the schedule, so checkpoints have one layout with or without a
decay and a run can take up a decay when it resumes (``_adam_for``).

How a replica's step runs: ``_local_gradients`` (the forward and backward passes of both
updates: losses, gradients, BatchNorm statistics) and then the updates (``_replica_step``:
cross-replica gradient sums and optimizer steps, the generator's moving average, BatchNorm
statistics averaged over replicas). The discriminator gradients are computed before the
generator's update is applied, which changes nothing: the fakes are detached and the
generator's update touches no discriminator variable. With ``jit_compile`` the first part is
one XLA computation per replica; the second, which talks to the other replicas, stays
TensorFlow ops (MirroredStrategy cannot run its cross-replica calls inside XLA except on
all-GPU machines, and the gradient all-reduce gains nothing from XLA).

Convolutions' input gradients (``fast_conv``) are decided per device kind and kernel library
by ``fast_conv.decide`` from ``config.fast_conv``; the setting applies while the step traces.
"""

from __future__ import annotations

import contextlib
import os

import keras
import tensorflow as tf

from keras_sf2f import runs
from keras_sf2f.models import builder, fast_conv
from keras_sf2f.models.face_preprocessing import facenet_inputs_from_generator_images
from keras_sf2f.training import losses
from keras_sf2f.training.config import TrainConfig


class LinearDecayAfter(keras.optimizers.schedules.LearningRateSchedule):
    """Constant ``initial`` until ``start_step``, then linear decay reaching
    ``final_factor * initial`` at ``end_step`` (the reference's per-epoch rule
    ``lr0 - (e - start + 1) / (end - start) * (lr0 - final_factor * lr0)`` per step)."""

    def __init__(self, initial: float, start_step: int, end_step: int, final_factor: float):
        self.initial = float(initial)
        self.start_step = int(start_step)
        self.end_step = int(end_step)
        self.final_factor = float(final_factor)

    def __call__(self, step):
        # float64: in float32 the subtraction loses the final factor's last digits.
        step = tf.cast(step, tf.float64)
        span = float(max(self.end_step - self.start_step, 1))
        fraction = tf.clip_by_value((step - self.start_step + 1.0) / span, 0.0, 1.0)
        decayed = self.initial - fraction * (self.initial - self.final_factor * self.initial)
        lr = tf.where(step < self.start_step, tf.constant(self.initial, tf.float64), decayed)
        return tf.cast(lr, tf.float32)

    def get_config(self):
        return dict(initial=self.initial, start_step=self.start_step, end_step=self.end_step,
                    final_factor=self.final_factor)


def learning_rate_schedule(config: TrainConfig, decays: bool):
    """The learning rate of an optimizer of the GAN step, as a function of its own step:
    --lr_decay_start_step's decay for the generator and image discriminators (``decays``),
    constant for the identity classifiers.

    --lr_decay_start_step and --train_steps count the run's steps, pre-training included,
    while these optimizers count only their own, which begin after it: the decay is shifted by
    the pre-training steps (--decoder_pretrain_steps + --voice_pretrain_steps) so that it ends
    at --train_steps."""
    if not decays or config.lr_decay_start_step < 0:
        return config.learning_rate
    offset = config.pretrain_steps
    return LinearDecayAfter(config.learning_rate, config.lr_decay_start_step - offset,
                            config.train_steps - offset, config.lr_decay_final_factor)


def make_strategy(name: str):
    """'mirrored' (all local devices; one replica on a CPU-only machine), 'multi_worker'
    (MultiWorkerMirroredStrategy from TF_CONFIG; create it before any other TF work) or
    'default' (no distribution)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                             "(cluster spec and this worker's task)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}: use mirrored, multi_worker or default")


def worker_info(strategy) -> tuple[str | None, int, bool]:
    """(task_type, task_id, is_chief) of this process under ``strategy``."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None) if resolver is not None else None
    task_id = int(getattr(resolver, "task_id", 0) or 0) if resolver is not None else 0
    if task_type is None:
        return None, 0, True
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if task_type == "chief":
        return task_type, task_id, True
    is_chief = task_type == "worker" and task_id == 0 and "chief" not in cluster
    return task_type, task_id, is_chief


@contextlib.contextmanager
def dtype_policy(name: str):
    """Temporarily sets Keras' global dtype policy (layers keep the policy they were built
    with)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _adam(config: TrainConfig, schedule):
    adam = keras.optimizers.Adam(learning_rate=schedule, beta_1=config.adam_beta1,
                                 beta_2=config.adam_beta2, epsilon=config.adam_epsilon)
    if config.mixed_precision == "mixed_float16":
        # Keras' defaults: initial scale 2^15, doubled after 2000 steps with finite gradients.
        return keras.optimizers.LossScaleOptimizer(adam)
    return adam


def strategy_device_types(strategy) -> list[str] | None:
    """The device types ('CPU', 'GPU', ...) this process's replicas run on, or None when the
    strategy does not say (the default strategy: TensorFlow's placement decides)."""
    try:
        devices = strategy.extended.worker_devices
    except (AttributeError, RuntimeError):
        return None
    return sorted({tf.DeviceSpec.from_string(d).device_type or "CPU" for d in devices})


def synchronize_batch_norm(models) -> list:
    """Sets ``synchronized = True`` on every ``keras.layers.BatchNormalization`` inside
    ``models`` and returns those layers. Under a tf.distribute strategy such a layer, called in
    training mode, normalises with the batch mean and variance all-reduced over the replicas
    (Keras 3, TensorFlow backend); inference mode and the weights are unchanged."""
    layers = []
    for model in models:
        for layer in model._flatten_layers(include_self=True, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization) and \
                    all(layer is not seen for seen in layers):
                layer.synchronized = True
                layers.append(layer)
    return layers


class GanTrainer:
    """Models, optimizers and the distributed SF2F training step (see module docstring).

    Args:
      config: the TrainConfig (model, loss weights, optimiser settings).
      strategy: a tf.distribute strategy (``make_strategy``).
      face_network: the perceptual loss's face network, or a zero-argument callable that
        builds/loads it (called under the strategy scope); required when
        ``config.perceptual_weight > 0``.
    """

    def __init__(self, config: TrainConfig, strategy=None, face_network=None):
        self.config = config
        self.strategy = strategy or tf.distribute.get_strategy()
        self.num_replicas = self.strategy.num_replicas_in_sync
        self.global_batch_size = int(config.batch_size)
        if self.global_batch_size % self.num_replicas:
            raise ValueError(f"batch_size {self.global_batch_size} is not divisible by the "
                             f"{self.num_replicas} replicas of the strategy")
        self.loss_scaling = config.mixed_precision == "mixed_float16"
        self.device_types = strategy_device_types(self.strategy)
        self.fast_conv, self.fast_conv_reason = fast_conv.decide(
            config.fast_conv, self.device_types, jit_compile=config.jit_compile)
        with dtype_policy(config.mixed_precision), self.strategy.scope():
            self.models = builder.build_models(config.model)
            generator = self.models.generator
            if config.train_fuser_only:
                generator.train_fuser_only()
            self.face_network = None
            if config.perceptual_weight > 0 or face_network is not None:
                if face_network is None:
                    raise ValueError("perceptual_weight > 0 needs a face network")
                if callable(face_network) and not isinstance(face_network, keras.Model):
                    face_network = face_network()
                self.face_network = face_network
                self.face_network.trainable = False

            self.resolutions = tuple(generator.output_resolutions)
            self.image_discriminators = {
                d.image_size: d for d in self.models.image_discriminators
                if config.gan_weight > 0}
            self.identity_classifiers = {
                c.image_size: c for c in self.models.identity_classifiers
                if config.ac_weight > 0}

            # Optimizer name -> the learning-rate schedule its learning-rate variable follows
            # (the decaying optimizers of a run with --lr_decay_start_step; see _adam_for).
            self.learning_rate_schedules = {}
            self.generator_variables = list(generator.trainable_variables)
            if not self.generator_variables:
                raise ValueError("the generator has no trainable variables")
            # The moving average of the generator (--generator_ema_decay): a second generator
            # of the same configuration, never trained, updated after every step and used
            # for every picture (validation, evaluation, export). Short, high-learning-rate
            # GAN runs oscillate from step to step; the average does not.
            self.generator_ema = None
            if config.generator_ema_decay > 0:
                self.generator_ema = builder.build_generator(config.model)
                self.generator_ema.trainable = False
                self.copy_generator_to_ema()
            self.generator_optimizer = self._adam_for("generator_optimizer", decays=True)
            self.generator_optimizer.build(self.generator_variables)
            self.image_discriminator_variables = [
                v for d in self.image_discriminators.values() for v in d.trainable_variables]
            self.identity_classifier_variables = [
                v for c in self.identity_classifiers.values() for v in c.trainable_variables]
            # The reference decays the generator's and the image discriminators' learning
            # rates, not the AC discriminators'.
            self.image_discriminator_optimizer = None
            if self.image_discriminator_variables:
                self.image_discriminator_optimizer = self._adam_for(
                    "image_discriminator_optimizer", decays=True)
                self.image_discriminator_optimizer.build(self.image_discriminator_variables)
            self.identity_classifier_optimizer = None
            if self.identity_classifier_variables:
                self.identity_classifier_optimizer = self._adam_for(
                    "identity_classifier_optimizer", decays=False)
                self.identity_classifier_optimizer.build(self.identity_classifier_variables)
            # --decoder_pretrain_steps: the map of the face network's embedding onto the
            # decoder's input, and the optimizer of the map and the decoder.
            self.face_to_decoder = self.decoder_pretrain_optimizer = None
            self.decoder_pretrain_variables = []
            if config.decoder_pretrain_steps > 0:
                if self.face_network is None:
                    raise ValueError("decoder_pretrain_steps > 0 needs a face network")
                self.face_to_decoder = keras.layers.Dense(config.model.embedding_dim,
                                                          name="decoder_pretrain_projection")
                self.face_to_decoder.build((None, int(self.face_network.embedding_dim)))
                self.decoder_pretrain_variables = (
                    list(generator.decoder.trainable_variables)
                    + list(self.face_to_decoder.trainable_variables))
                self.decoder_pretrain_optimizer = _adam(config, config.learning_rate)
                self.decoder_pretrain_optimizer.build(self.decoder_pretrain_variables)
            # --voice_pretrain_steps: the encoder's read-out onto the face network's embedding
            # (none after decoder pre-training: the encoder's embedding regresses the
            # decoder's input directly) and its own optimizer (the generator's Adam state
            # starts fresh after them).
            self.voice_head = self.voice_pretrain_optimizer = None
            self.voice_pretrain_variables = []
            if config.voice_pretrain_steps > 0:
                if self.face_network is None:
                    raise ValueError("voice_pretrain_steps > 0 needs a face network")
                self.voice_pretrain_variables = list(generator.encoder.trainable_variables)
                if self.face_to_decoder is None:
                    self.voice_head = keras.layers.Dense(int(self.face_network.embedding_dim),
                                                         name="voice_pretrain_head")
                    self.voice_head.build((None, config.model.embedding_dim))
                    self.voice_pretrain_variables += list(self.voice_head.trainable_variables)
                self.voice_pretrain_optimizer = _adam(config, config.learning_rate)
                self.voice_pretrain_optimizer.build(self.voice_pretrain_variables)

        # BatchNorm moving statistics of the models that are updated in training mode.
        updated = ([] if config.train_fuser_only else [self.models.generator]) + \
            list(self.image_discriminators.values()) + list(self.identity_classifiers.values())
        self.moving_statistics = [
            w for model in updated for w in model.non_trainable_weights
            if w.path.rsplit("/", 1)[-1] in ("moving_mean", "moving_variance")]
        # --sync_batch_norm: those models' BatchNorm layers normalise with global-batch
        # statistics. Keras reads ``synchronized`` when the layer is called (while the step
        # traces), so setting it here changes neither the layers' weights nor the
        # checkpoints; with one replica there is nothing to synchronise and the layers are
        # left as they are (Keras' synchronised moments compute the variance as
        # E[x^2] - E[x]^2, which would round differently).
        self.sync_batch_norm = bool(config.sync_batch_norm) and self.num_replicas > 1
        self.synchronized_batch_norms = []
        if self.sync_batch_norm:
            if config.jit_compile and self.device_types != ["GPU"]:
                raise ValueError(
                    "sync_batch_norm with jit_compile needs every replica on a GPU: the "
                    "BatchNorm all-reduces run inside the XLA-compiled replica step, which "
                    "MirroredStrategy supports on all-GPU machines only; drop one of the two")
            self.synchronized_batch_norms = synchronize_batch_norm(updated)
        # Multi-worker runs agree on stopping (a signal reaching one worker) through one tiny
        # all-reduce per step; single-worker runs need none.
        task_type, _, _ = worker_info(self.strategy)
        self.sync_stop = task_type is not None
        self.stop_flag = tf.Variable(0.0, trainable=False, name="stop_flag")
        # autograph=False: the step has no tensor-dependent Python control flow, and converting
        # every Keras call with autograph doubles the tracing time.
        self.train_step = tf.function(self._distributed_step, autograph=False)
        self.voice_pretrain_step = tf.function(self._distributed_voice_pretrain_step,
                                               autograph=False)
        self.decoder_pretrain_step = tf.function(self._distributed_decoder_pretrain_step,
                                                 autograph=False)
        # Traced once per replica device (MirroredStrategy retraces functions per device), so
        # each replica's computation captures its own copies of the variables.
        self._local_step = (tf.function(self._local_gradients, jit_compile=True,
                                        autograph=False)
                            if config.jit_compile else self._local_gradients)
        mel_bins = config.model.input_channels
        self.generate = tf.function(self._generate, input_signature=[
            tf.TensorSpec([None, None, None, mel_bins], tf.float32),
            tf.TensorSpec([None, None], tf.bool)])
        self.embed_faces = tf.function(self._embed_faces, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.float32)])

    # -- bookkeeping ----------------------------------------------------------------------

    @property
    def uses_fuser_batches(self) -> bool:
        """Stage-2 batches (window stacks + mask) instead of stage-1 crops."""
        return self.config.model.fuser == "attention"

    def _adam_for(self, name: str, decays: bool):
        """The Adam of the GAN step's optimizer ``name``. Its learning rate is always a
        variable: with a decay (``learning_rate_schedule``), the step sets it from the
        schedule (``_follow_learning_rate_schedules``). An Adam built with the schedule itself
        would have no such variable, so its checkpoint would differ from a run's without a
        decay, and a run could not take up or change --lr_decay_start_step when it resumes."""
        schedule = learning_rate_schedule(self.config, decays)
        if callable(schedule):
            self.learning_rate_schedules[name] = schedule
        return _adam(self.config, self.config.learning_rate)

    def adopt_checkpoint_learning_rates(self, prefix: str) -> list[str]:
        """Before resuming from ``prefix`` (and before a ``tf.train.Checkpoint`` takes the
        optimizers): a decaying optimizer that the checkpoint saved without a learning-rate
        variable (runs with a decay written before 2026-12-07 built their Adam with the
        schedule) is built that way again, so that the checkpoint matches. Returns the names
        of the optimizers rebuilt."""
        adopted = []
        for name in list(self.learning_rate_schedules):
            if (runs.checkpoint_has_object(prefix, (name,)) and
                    not runs.checkpoint_has_object(prefix, (name, "_learning_rate"))):
                self.build_optimizer_with_schedule(name)
                adopted.append(name)
        return adopted

    def build_optimizer_with_schedule(self, name: str):
        """Replaces the decaying optimizer ``name`` by an Adam built with its schedule (the
        form before 2026-12-07), which then follows the schedule by itself."""
        schedule = self.learning_rate_schedules.pop(name)
        variables = {"generator_optimizer": self.generator_variables,
                     "image_discriminator_optimizer": self.image_discriminator_variables}[name]
        with dtype_policy(self.config.mixed_precision), self.strategy.scope():
            optimizer = _adam(self.config, schedule)
            optimizer.build(variables)
        setattr(self, name, optimizer)

    def _follow_learning_rate_schedules(self):
        """Sets each decaying optimizer's learning rate for its coming update: what Keras
        computes for an optimizer built with the schedule (``schedule(iterations)``)."""
        for name, schedule in self.learning_rate_schedules.items():
            optimizer = self.optimizers()[name]
            optimizer.learning_rate = schedule(optimizer.iterations)

    def optimizers(self) -> dict:
        """name -> optimizer, for the ones in use."""
        named = {"generator_optimizer": self.generator_optimizer,
                 "image_discriminator_optimizer": self.image_discriminator_optimizer,
                 "identity_classifier_optimizer": self.identity_classifier_optimizer}
        return {k: v for k, v in named.items() if v is not None}

    def model_objects(self) -> dict:
        """The models by checkpoint name (``builder.checkpoint_objects``), plus
        ``generator_ema`` when training keeps a moving average of the generator."""
        objects = builder.checkpoint_objects(self.models)
        if self.generator_ema is not None:
            objects[builder.EMA_GENERATOR_NAME] = self.generator_ema
        return objects

    @property
    def inference_generator(self):
        """The generator that draws pictures: the moving average when there is one."""
        return self.generator_ema if self.generator_ema is not None else self.models.generator

    def copy_generator_to_ema(self):
        """Starts (or restarts, e.g. after --init_checkpoint) the average at the generator's
        current weights."""
        if self.generator_ema is None:
            return
        for average, weight in zip(self.generator_ema.weights, self.models.generator.weights):
            average.assign(weight)

    def adversarial_factor(self, step):
        """The generator's adversarial terms' weight factor at ``step`` (0-based): 0 before
        ``adversarial_start_step``, then a linear ramp to 1 over ``adversarial_ramp_steps``."""
        config = self.config
        step = tf.cast(step, tf.float32)
        start = float(config.adversarial_start_step)
        if config.adversarial_ramp_steps <= 0:
            return tf.cast(step >= start, tf.float32)
        return tf.clip_by_value((step - start + 1.0) / float(config.adversarial_ramp_steps),
                                0.0, 1.0)

    def checkpoint_objects(self) -> dict:
        """Models and optimizers by checkpoint name (with the pre-training phases' maps and
        optimizers, which only training needs)."""
        pretrain = {
            "decoder_pretrain_projection": self.face_to_decoder,
            "decoder_pretrain_optimizer": self.decoder_pretrain_optimizer,
            "voice_pretrain_head": self.voice_head,
            "voice_pretrain_optimizer": self.voice_pretrain_optimizer}
        return {**self.model_objects(), **self.optimizers(),
                **{name: value for name, value in pretrain.items() if value is not None}}

    def learning_rates(self) -> dict:
        """The learning rate of each optimizer's next update, for the summaries."""
        rates = {}
        for name, optimizer in self.optimizers().items():
            schedule = self.learning_rate_schedules.get(name)
            rate = (schedule(optimizer.iterations) if schedule is not None
                    else optimizer.learning_rate)
            rates[f"lr/{name.replace('_optimizer', '')}"] = float(
                tf.convert_to_tensor(rate).numpy())
        return rates

    def distribute(self, dataset_fn):
        """A distributed dataset of per-replica batches from ``dataset_fn()``, a function
        returning a dataset of *global* batches (tuples whose tensors have the global batch
        first). Every input pipeline builds the same global batch and keeps its replicas'
        slices, so the data a step sees does not depend on the number of workers."""
        num_replicas = self.num_replicas
        per_replica = self.global_batch_size // num_replicas

        def replica_slices(context: tf.distribute.InputContext):
            dataset = dataset_fn()
            if context.num_replicas_in_sync == 1:
                return dataset
            local = context.num_replicas_in_sync // context.num_input_pipelines
            first = context.input_pipeline_id * local

            def take(*tensors):
                out = []
                for t in tensors:
                    shape = tf.shape(t)
                    t = tf.reshape(t, tf.concat([[num_replicas, per_replica], shape[1:]], 0))
                    out.append(t[first:first + local])
                return tuple(out)

            return dataset.map(take).unbatch()

        options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
        return self.strategy.distribute_datasets_from_function(replica_slices, options)

    # -- the step --------------------------------------------------------------------------

    def _distributed_step(self, iterator):
        return self._on_replicas(self._replica_step, iterator)

    def _distributed_voice_pretrain_step(self, iterator):
        return self._on_replicas(self._voice_pretrain_replica_step, iterator)

    def _distributed_decoder_pretrain_step(self, iterator):
        return self._on_replicas(self._decoder_pretrain_replica_step, iterator)

    def _on_replicas(self, replica_step, iterator):
        """The next global batch through ``replica_step`` on every replica; its values
        summed over replicas."""
        # Python runs only while tracing: the fast_conv setting applies to the traced step.
        with fast_conv.enabled(self.fast_conv):
            batch = next(iterator)
            per_replica = self.strategy.run(replica_step, args=(batch,))
            return {name: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
                    for name, value in per_replica.items()}

    def _average(self, per_example):
        return losses.average_over_global_batch(per_example, self.global_batch_size)

    def _scaled(self, optimizer, loss):
        """The loss whose gradients the optimizer receives: ``loss * scale`` under loss
        scaling (the LossScaleOptimizer divides the gradients by the scale again)."""
        if self.loss_scaling and optimizer is not None:
            return optimizer.scale_loss(loss)
        return loss

    def _replica_step(self, batch):
        generator_gradients, d_gradients, out = self._local_step(batch)
        self._follow_learning_rate_schedules()
        groups = [(self.generator_optimizer, generator_gradients, self.generator_variables)]
        split = len(self.image_discriminator_variables)
        if d_gradients is not None:
            groups.append((self.image_discriminator_optimizer, d_gradients[:split],
                           self.image_discriminator_variables))
            groups.append((self.identity_classifier_optimizer, d_gradients[split:],
                           self.identity_classifier_variables))
        groups = [(opt, grads, variables) for opt, grads, variables in groups
                  if opt is not None]
        if self.loss_scaling and self.num_replicas > 1:
            groups = self._agree_on_overflow(groups)
        for optimizer, gradients, variables in groups:
            optimizer.apply_gradients(zip(gradients, variables))
            if optimizer is self.generator_optimizer:
                self._update_ema()
        if self.loss_scaling:
            # Summed over replicas by _distributed_step, like every value: divided here.
            for name, optimizer in self.optimizers().items():
                out[f"control/loss_scale/{name.replace('_optimizer', '')}"] = (
                    tf.identity(optimizer.dynamic_scale) / self.num_replicas)
        return self._with_stop(out)

    def _decoder_input(self, face_embeddings):
        """The decoder's unit-norm input for the face network's embeddings of faces
        (--decoder_pretrain_steps' learned map)."""
        return tf.math.l2_normalize(
            tf.cast(self.face_to_decoder(face_embeddings), tf.float32), -1)

    def _decoder_pretrain_replica_step(self, batch):
        """One --decoder_pretrain_steps step: the decoder draws the batch's real faces from
        the face network's embeddings of them, with the generator's L1 and perceptual
        terms."""
        images, _, _ = batch
        real = {res: tf.cast(losses.downsample_nearest(images, res), tf.float32)
                for res in self.resolutions}
        top = max(self.resolutions)
        real_features = None
        if self.config.perceptual_weight > 0:
            # One face-network pass over the real faces gives both the embedding the decoder
            # draws from (its last hidden state) and the perceptual loss's real features (a
            # second pass is about a tenth of the step's work; its saving was within the
            # timing noise on the AMD kind, BUILD_NOTES.md).
            real_features = [tf.stop_gradient(f) for f in
                             losses.face_features(self.face_network, real[top])]
            target = tf.cast(real_features[-1], tf.float32)
        else:
            target = tf.stop_gradient(self._embed_faces(real[top]))
        if self.config.decoder_pretrain_noise > 0:
            target = tf.math.l2_normalize(
                target + self.config.decoder_pretrain_noise * self._stateless_normal(
                    tf.shape(target), self.decoder_pretrain_optimizer.iterations), -1)
        with tf.GradientTape() as tape:
            drawn = self.models.generator.decoder(self._decoder_input(target), training=True)
            if not isinstance(drawn, (list, tuple)):
                drawn = [drawn]
            terms = {}
            for res, image in zip(self.resolutions, drawn):
                terms.update(self._reconstruction_terms(
                    tf.cast(image, tf.float32), real[res], res,
                    real_features if res == top else None))
            scaled = {name: self._average(value) for name, value in terms.items()}
            total = tf.add_n(list(scaled.values()))
            objective = self._scaled(self.decoder_pretrain_optimizer, total)
        gradients = tape.gradient(objective, self.decoder_pretrain_variables)
        self.decoder_pretrain_optimizer.apply_gradients(
            zip(gradients, self.decoder_pretrain_variables))
        out = {f"decoder_pretrain/{name}": value for name, value in scaled.items()}
        out["decoder_pretrain/total_loss"] = total
        return self._with_stop(out)

    def _stateless_normal(self, shape, step):
        """Standard normal noise that depends only on (--seed, step, replica): a resumed run
        draws what the uninterrupted one drew."""
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        seed = tf.stack([tf.cast(self.config.seed, tf.int64),
                         tf.cast(step, tf.int64) * self.num_replicas
                         + tf.cast(replica, tf.int64)])
        return tf.random.stateless_normal(shape, seed=seed)

    def _voice_pretrain_replica_step(self, batch):
        """One --voice_pretrain_steps step: the encoder and its read-out regress the face
        network's embedding of the batch's real faces (cosine distance); after decoder
        pre-training the encoder's embedding itself regresses the decoder's input for them."""
        images, mels, _ = batch
        face = tf.cast(losses.downsample_nearest(images, max(self.resolutions)), tf.float32)
        target = tf.stop_gradient(self._embed_faces(face))
        if self.face_to_decoder is not None:
            target = tf.stop_gradient(self._decoder_input(target))
        encoder = self.models.generator.encoder
        with tf.GradientTape() as tape:
            embedding = tf.cast(encoder(mels, training=True), tf.float32)
            guess = tf.reshape(embedding, [tf.shape(embedding)[0], -1])
            if self.voice_head is not None:
                guess = self.voice_head(guess)
            cosine = tf.reduce_sum(tf.math.l2_normalize(tf.cast(guess, tf.float32), -1)
                                   * tf.math.l2_normalize(target, -1), -1)
            loss = self._average(1.0 - cosine)
            objective = self._scaled(self.voice_pretrain_optimizer, loss)
        gradients = tape.gradient(objective, self.voice_pretrain_variables)
        self.voice_pretrain_optimizer.apply_gradients(
            zip(gradients, self.voice_pretrain_variables))
        return self._with_stop({"voice_pretrain/cosine_distance": loss})

    def _agree_on_overflow(self, groups):
        """Makes every replica see non-finite gradients for an optimizer when any replica has.

        LossScaleOptimizer (Keras 3.15, tf.distribute) decides whether to skip the step from the
        first replica's gradients *before* they are summed; an overflow on another replica alone
        would reach the summed gradients and the weights. One small all-reduce of the per-optimizer
        overflow flags, and a NaN added to the smallest gradient of an optimizer that
        overflowed somewhere, make every replica's decision the global one."""
        context = tf.distribute.get_replica_context()
        flags = tf.stack([1.0 - tf.cast(tf.reduce_all([tf.reduce_all(tf.math.is_finite(g))
                                                      for g in grads if g is not None]),
                                        tf.float32)
                          for _, grads, _ in groups])
        overflowed = context.all_reduce(tf.distribute.ReduceOp.SUM, flags) > 0
        agreed = []
        for index, (optimizer, grads, variables) in enumerate(groups):
            grads = list(grads)
            smallest = min((i for i, g in enumerate(grads) if g is not None),
                           key=lambda i: grads[i].shape.num_elements() or 0)
            poison = tf.where(overflowed[index], float("nan"), 0.0)
            grads[smallest] = grads[smallest] + tf.cast(poison, grads[smallest].dtype)
            agreed.append((optimizer, grads, variables))
        return agreed

    def _local_gradients(self, batch):
        """This replica's part of the step: losses and gradients of the generator update and of
        the discriminator updates (None when no discriminator trains), and the values to
        report. Variables change only through BatchNorm statistics here."""
        config = self.config
        if self.uses_fuser_batches:
            images, mels, mask, labels = batch
        else:
            (images, mels, labels), mask = batch, None
        generator = self.models.generator
        real = {res: tf.cast(losses.downsample_nearest(images, res), tf.float32)
                for res in self.resolutions}
        generator_training = not config.train_fuser_only
        out = {}
        adversarial = self.adversarial_factor(self.generator_optimizer.iterations)

        # 1. generator update.
        with tf.GradientTape() as tape:
            fakes, _ = generator(mels, segment_mask=mask, training=generator_training)
            fake = {res: tf.cast(image, tf.float32) for res, image in zip(self.resolutions, fakes)}
            terms = {}
            for res in self.resolutions:
                terms.update(self._reconstruction_terms(fake[res], real[res], res))
                if res in self.image_discriminators:
                    logits = self.image_discriminators[res](fake[res], training=True)
                    terms[f"g_gan_img_loss_{res}"] = (
                        adversarial * config.gan_weight * losses.generator_gan_loss(logits))
                if res in self.identity_classifiers:
                    real_fake, identity = self.identity_classifiers[res](fake[res], training=True)
                    terms[f"ac_loss_{res}"] = config.ac_weight * losses.identity_cross_entropy(
                        identity, labels)
                    terms[f"g_gan_ac_loss_{res}"] = (
                        adversarial * config.ac_weight * losses.generator_gan_loss(real_fake))
            scaled = {name: self._average(value) for name, value in terms.items()}
            total = tf.add_n(list(scaled.values()))
            objective = self._scaled(self.generator_optimizer, total)
        generator_gradients = tape.gradient(objective, self.generator_variables)
        out.update({f"loss/{name}": value for name, value in scaled.items()})
        out["loss/total_loss"] = total
        if config.adversarial_start_step > 0 or config.adversarial_ramp_steps > 0:
            out["control/adversarial_factor"] = adversarial / self.num_replicas

        # 2. discriminator updates on the same batch, fakes detached.
        d_variables = self.image_discriminator_variables + self.identity_classifier_variables
        if not d_variables:
            return generator_gradients, None, out
        fake = {res: tf.stop_gradient(image) for res, image in fake.items()}
        with tf.GradientTape() as tape:
            d_terms, accuracies = {}, {}
            for res, discriminator in self.image_discriminators.items():
                real_logits = discriminator(real[res], training=True)
                fake_logits = discriminator(fake[res], training=True)
                d_terms[f"d_img_gan_loss_{res}"] = losses.discriminator_gan_loss(
                    real_logits, fake_logits)
                accuracies[f"img_real_{res}"] = losses.binary_accuracy(real_logits, 1.0)
                accuracies[f"img_fake_{res}"] = losses.binary_accuracy(fake_logits, 0.0)
            for res, classifier in self.identity_classifiers.items():
                real_rf, real_id = classifier(real[res], training=True)
                fake_rf, _ = classifier(fake[res], training=True)
                d_terms[f"d_ac_gan_loss_{res}"] = losses.discriminator_gan_loss(real_rf, fake_rf)
                d_terms[f"d_ac_loss_real_{res}"] = losses.identity_cross_entropy(real_id, labels)
                accuracies[f"ac_real_{res}"] = losses.binary_accuracy(real_rf, 1.0)
                accuracies[f"ac_fake_{res}"] = losses.binary_accuracy(fake_rf, 0.0)
                accuracies[f"ac_identity_{res}"] = losses.identity_accuracy(real_id, labels)
            d_scaled = {name: self._average(value) for name, value in d_terms.items()}
            image_total = tf.add_n([v for k, v in d_scaled.items() if k.startswith("d_img_")]
                                   or [tf.zeros([])])
            identity_total = tf.add_n([v for k, v in d_scaled.items() if k.startswith("d_ac_")]
                                      or [tf.zeros([])])
            # Each discriminator group's loss only reaches its own variables, so one gradient
            # of the sum is both groups' gradients; under loss scaling each group's loss is
            # scaled by its own optimizer's scale.
            d_objective = (self._scaled(self.image_discriminator_optimizer, image_total)
                           + self._scaled(self.identity_classifier_optimizer, identity_total))
        d_gradients = tape.gradient(d_objective, d_variables)
        out.update({f"d_loss/{name}": value for name, value in d_scaled.items()})
        out["d_loss/total_loss"] = image_total + identity_total
        out.update({f"d_acc/{name}": self._average(value) for name, value in accuracies.items()})
        return generator_gradients, d_gradients, out

    def _reconstruction_terms(self, fake, real, res, real_features=None) -> dict:
        """The generator's per-example terms that compare a drawn face with the real one at
        one resolution: weighted L1 pixel loss, L1 on image gradients and FaceNet perceptual
        loss (each when on).
        ``real_features``: the face network's features of ``real``, if already computed."""
        config = self.config
        terms = {}
        if config.l1_weight > 0:
            terms[f"l1_pixel_loss_{res}"] = config.l1_weight * losses.l1_pixel_loss(fake, real)
        if config.gradient_l1_weight > 0:
            terms[f"gradient_l1_loss_{res}"] = (
                config.gradient_l1_weight * losses.image_gradient_l1_loss(fake, real))
        if config.perceptual_weight > 0:
            terms[f"img_perceptual_loss_{res}"] = (
                config.perceptual_weight * losses.facenet_perceptual_loss(
                    self.face_network, fake, real, config.perceptual_layer_weights,
                    real_features=real_features))
        return terms

    def _with_stop(self, out):
        self._sync_moving_statistics()
        if self.sync_stop:
            context = tf.distribute.get_replica_context()
            out["control/stop"] = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                                     tf.identity(self.stop_flag))
        return out

    def _update_ema(self):
        """ema = d * ema + (1 - d) * w for trainable weights; BatchNorm moving statistics
        (and any other non-trainable weight) are copied, as they are averages already. Every
        replica holds the same weights after the optimizer step, so every replica computes
        the same average (as ``_sync_moving_statistics``' assignment)."""
        if self.generator_ema is None:
            return
        decay = float(self.config.generator_ema_decay)
        generator = self.models.generator
        trainable = {id(v) for v in generator.trainable_variables}
        for average, weight in zip(self.generator_ema.weights, generator.weights):
            value = tf.cast(weight.value if hasattr(weight, "value") else weight, average.dtype)
            if id(weight) in trainable:
                average.assign(decay * average + (1.0 - decay) * value)
            else:
                average.assign(value)

    def _sync_moving_statistics(self):
        """Averages the BatchNorm moving statistics over replicas after each step.

        Keras creates them without a tf.distribute aggregation, so each replica would update
        its own copy from its own batch statistics and the copies would drift apart across
        workers. The reference (DataParallel) keeps replica 0's; the mean of all replicas'
        updates is used here. Batch statistics themselves stay per replica, as in the
        reference, unless ``sync_batch_norm`` (then every replica's update is already the
        same, and the average keeps the copies bit-identical whatever the all-reduce's
        rounding)."""
        if self.num_replicas == 1 or not self.moving_statistics:
            return
        context = tf.distribute.get_replica_context()
        means = context.all_reduce(tf.distribute.ReduceOp.MEAN,
                                   [tf.identity(v.value) for v in self.moving_statistics])
        for variable, mean in zip(self.moving_statistics, means):
            variable.assign(mean)

    # -- inference helpers (validation) ----------------------------------------------------

    def _generate(self, segments, mask):
        """Window stacks [B, W, T, mels] + mask -> list of float32 images, lowest resolution
        first (inference mode; without a fuser the window embeddings are averaged)."""
        images, _ = self.inference_generator(segments, segment_mask=mask, training=False)
        return [tf.cast(image, tf.float32) for image in images]

    def _embed_faces(self, images):
        """Generator-space faces -> the face network's (unit-norm) embeddings, float32."""
        inputs = facenet_inputs_from_generator_images(images)
        return tf.cast(self.face_network(inputs, training=False), tf.float32)
