"""Training as small steps, each taking the run's params: read the split, build the model, plan the phases,
fit each phase, summarise. Notebook 03 calls them in this order (`train()` does the same in one call):

    strategy = training.make_strategy(p.train.strategy)   # first: a cluster must form before anything else
    data = training.read_data(run_dir, p.data.image_size)
    model = training.build(p, data.classes, strategy)     # seeds, dtype policy, model
    results = [training.fit_phase(model, phase, data, p, run_dir, strategy) for phase in training.plan(p)]
    summary = training.summarize(run_dir, p, data, strategy, results)

A two-phase recipe (train.fine_tune_epochs > 0) first trains the head alone on cached backbone features
(one pass of the backbone; the head's epochs then cost seconds), then fine-tunes `model.trainable_layers`
with augmentation, a warm-up + cosine learning rate, and the recipe's loss and sampling.

Products: model/best.keras (the best epoch by train.monitor), model/history.csv, logs/ (TensorBoard), features/,
training.json; model/backup/ while running: running the same steps again resumes at the last finished epoch.
"""

import atexit
import contextlib
import dataclasses
import logging
import math
import os
import platform
import shutil
import tempfile
import time
import typing
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from lib import artifacts, inputs, models, registry
from lib.errors import TrainingError

log = logging.getLogger(__name__)

STRATEGY_NAMES = {"_DefaultDistributionStrategy": "default", "MirroredStrategy": "mirrored", "TPUStrategy": "tpu",
                  "MultiWorkerMirroredStrategy": "multi_worker", "CollectiveAllReduceStrategy": "multi_worker"}
TOP_K = (2, 3)  # top-k accuracies, logged only when there are more than k classes
SAMPLE_IMAGES = 8  # augmented training images shown in TensorBoard and notebook 03
# CPU features with bfloat16 arithmetic: there `mixed_precision: auto` computes in bfloat16 (see resolve_precision)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


# ---- devices, precision, seeds -------------------------------------------------------------------------

def make_strategy(name="auto"):
    """A tf.distribute strategy: auto (TPU if one answers, else MirroredStrategy over >1 GPU, else the
    default), default, mirrored (all GPUs, or all logical CPUs when there is no GPU), tpu, or
    multi_worker (MultiWorkerMirroredStrategy over the cluster that $TF_CONFIG describes, one process per
    machine). Create the strategy before TensorFlow does anything else, and before building models."""
    if name not in registry.STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(registry.STRATEGIES)}")
    if name in ("auto", "tpu"):
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            if name == "tpu":
                raise TrainingError(f"train.strategy: tpu, but no TPU answers ({error}); use auto") from error
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise TrainingError("train.strategy: multi_worker needs $TF_CONFIG on every worker, e.g. "
                                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
                                '"index": 0}}; run notebook 03 once per worker, or use auto on one machine')
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def cpu_flags():
    """The CPU's feature flags (/proc/cpuinfo on Linux; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(mode="auto", backbone=None):
    """The Keras dtype policy for `mode`: auto = mixed_bfloat16 on a TPU, mixed_float16 on a GPU, and on a CPU
    with bfloat16 instructions (BF16_CPU_FLAGS) mixed_bfloat16 for the backbones measured faster that way
    (registry.Backbone.cpu_bfloat16), else float32; off = float32; or the policy named."""
    if mode not in registry.PRECISIONS:
        raise ValueError(f"unknown mixed_precision {mode!r}; choose one of: {', '.join(registry.PRECISIONS)}")
    if mode == "off":
        return "float32"
    if mode != "auto":
        return mode
    if tf.config.list_logical_devices("TPU"):
        return "mixed_bfloat16"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    faster = backbone is not None and registry.BACKBONES[backbone].cpu_bfloat16
    return "mixed_bfloat16" if faster and cpu_flags() & set(BF16_CPU_FLAGS) else "float32"


def seed_everything(seed, deterministic=True):
    """Seed Python, NumPy, TensorFlow and Keras from `seed`; with `deterministic`, also make TensorFlow's ops
    deterministic, so the same params on the same machine give the same weights (cost: benchmarks/)."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def describe_device(strategy):
    """One line naming the hardware and the number of replicas, for the notebook and training.json."""
    tpus, gpus = tf.config.list_logical_devices("TPU"), tf.config.list_physical_devices("GPU")
    if tpus:
        hardware = f"TPU ({len(tpus)} cores)"
    elif gpus:  # the model name (e.g. "Tesla T4"), which tells what speed and mixed precision to expect
        hardware = "GPU " + ", ".join(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
                                      for gpu in gpus)
    else:
        bf16 = sorted(cpu_flags() & set(BF16_CPU_FLAGS))
        hardware = f"CPU ({os.cpu_count()} cores, {platform.machine()}{', ' + '+'.join(bf16) if bf16 else ''})"
    return f"{hardware}; {type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)"


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy):
    """Whether this process writes the run's products: always, except on the non-chief workers of a
    multi-worker cluster (worker 0 is the chief when the cluster names none)."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


_WORKER_DIRS = {}


def output_dir(run_dir, strategy):
    """Where this process writes what training makes: the run folder, or, on a non-chief worker, a temporary
    folder removed at exit (the workers share the run folder's data; only the chief's products count)."""
    if is_chief(strategy):
        return Path(run_dir)
    if run_dir not in _WORKER_DIRS:
        _WORKER_DIRS[run_dir] = Path(tempfile.mkdtemp(prefix="worker-"))
        atexit.register(shutil.rmtree, _WORKER_DIRS[run_dir], ignore_errors=True)
    return _WORKER_DIRS[run_dir]


def fit_under_multi_worker(model):
    """Let Keras 3 `fit()` run under MultiWorkerMirroredStrategy (keras-team/keras#20585, open): Keras reduces
    a sample batch before the first step and each step's scalar logs with axis=0 across workers, and both
    fail there. The first is skipped (the model builds when the step is traced; `fit` must then run inside
    `strategy.scope()`), and the logs get the axis they are reduced over. Gradients are all-reduced by the
    optimizer as usual: every worker ends with the same weights, which tests/test_training.py checks."""
    model._distribute_strategy = None
    for name in ("train_step", "test_step"):
        step = getattr(model, name)
        setattr(model, name, lambda data, step=step: {key: tf.reshape(value, [1])
                                                      for key, value in step(data).items()})
    return model


# ---- step 1: the split ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Split:
    paths: list  # absolute paths of processed PNGs
    labels: np.ndarray  # int32 class indices in `classes` order


@dataclasses.dataclass(frozen=True)
class TrainingData:
    classes: list
    train: Split
    validation: Split
    image_size: int


def read_data(run_dir, image_size, image_root=None):
    """The train and validation splits of the run's manifest (notebook 02), with images read from
    `image_root` (the run folder by default; a local copy of it on Colab)."""
    classes = artifacts.class_names(run_dir)
    manifest = artifacts.read_manifest(run_dir, image_root=image_root)
    unknown = sorted(set(manifest["label"]) - set(classes))
    if unknown:
        raise TrainingError(f"the manifest of {run_dir} has labels {unknown} missing from its classes.json ({classes})")
    position = {name: index for index, name in enumerate(classes)}
    splits = {}
    for split in ("train", "validation"):
        rows = manifest[manifest["split"] == split]
        if rows.empty:
            raise TrainingError(f"no {split} images in the manifest of {run_dir}; check data.validation_fraction")
        splits[split] = Split(list(rows["abs_path"]), rows["label"].map(position).to_numpy(np.int32))
    return TrainingData(classes, splits["train"], splits["validation"], image_size)


# ---- step 2: the model ---------------------------------------------------------------------------------

def build(p, classes, strategy):
    """A fresh classifier for `p` (Params) in `strategy`'s scope: Keras state cleared, then the dtype policy
    (resolve_precision) and the seeds set, then the model built with the first phase's trainable layers.
    Every monitored metric is checked here, before any training."""
    keras.backend.clear_session()  # also resets the dtype policy: set it after, so it holds for the model
    policy = resolve_precision(p.train.mixed_precision, p.model.backbone)
    keras.config.set_dtype_policy("float32" if policy == registry.POINTWISE_BFLOAT16 else policy)
    seed_everything(p.seed, p.train.deterministic)
    options = {**dataclasses.asdict(p.model), "trainable_layers": plan(p)[0].trainable_layers}
    with strategy.scope():
        model = models.build_model(num_classes=len(classes), image_size=p.data.image_size, **options)
        if policy == registry.POINTWISE_BFLOAT16:
            models.compute_pointwise_in_bfloat16(model)
    known = metric_names(len(classes))
    allowed = known + [f"val_{name}" for name in known]
    for key, monitor in (("train.monitor", p.train.monitor),
                         ("train.reduce_lr.monitor", p.train.reduce_lr and p.train.reduce_lr.monitor),
                         ("train.early_stopping.monitor", p.train.early_stopping and p.train.early_stopping.monitor)):
        if monitor and monitor not in allowed:
            raise TrainingError(f"{key}: unknown metric {monitor!r} for this model; choose one of: {', '.join(allowed)}")
    return model


def metric_names(num_classes):
    """What `compile_model` logs for a model with `num_classes` outputs (each also with a val_ prefix)."""
    return (["loss", "accuracy", "balanced_accuracy"] + [f"top{k}_accuracy" for k in TOP_K if num_classes > k]
            + ["auc"])


@keras.saving.register_keras_serializable(package="lib.training")
class BalancedAccuracy(keras.metrics.Metric):
    """Mean recall over the classes present in the labels seen so far (scikit-learn's balanced_accuracy_score,
    the ISIC 2018 ranking metric), from one-hot labels and probabilities, accumulated over batches."""

    def __init__(self, num_classes, name="balanced_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.confusion = self.add_variable(shape=(num_classes, num_classes), initializer="zeros",
                                           dtype="float32", aggregation="sum", name="confusion")

    def update_state(self, y_true, y_pred, sample_weight=None):
        true = keras.ops.argmax(y_true, axis=-1)
        predicted = keras.ops.argmax(y_pred, axis=-1)
        pairs = keras.ops.one_hot(true * self.num_classes + predicted, self.num_classes ** 2, dtype="float32")
        counts = keras.ops.reshape(keras.ops.sum(pairs, axis=0), (self.num_classes, self.num_classes))
        self.confusion.assign_add(counts)

    def result(self):
        support = keras.ops.sum(self.confusion, axis=1)
        recall = keras.ops.divide_no_nan(keras.ops.diagonal(self.confusion), support)
        present = keras.ops.cast(support > 0, "float32")
        return keras.ops.divide_no_nan(keras.ops.sum(recall * present), keras.ops.sum(present))

    def reset_state(self):
        self.confusion.assign(keras.ops.zeros((self.num_classes, self.num_classes)))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="lib.training")
class LogitAdjustedCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy of a softmax's probabilities with `offsets` added to its logits first: with
    tau x log(class prior) as offsets, the logit-adjusted loss of Menon et al. 2021 ("Long-tail learning via logit
    adjustment"), whose minimiser's plain softmax weighs every class the same, as balanced accuracy does. Label
    smoothing spreads its share by softmax(offsets), the prior, not evenly: even shares in the adjusted scores would
    be a floor of up to prior ratio x the smoothing in the plain ones (~70x for df against nv), which then answer the
    rare classes for any image; shares by the prior are an even floor in the plain scores."""

    def __init__(self, offsets, label_smoothing=0.0, name="logit_adjusted_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.offsets = [float(offset) for offset in offsets]
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        epsilon = keras.config.epsilon()  # the clip of Keras' own cross-entropy on probabilities
        offsets = keras.ops.convert_to_tensor(self.offsets, y_pred.dtype)
        logits = keras.ops.log(keras.ops.clip(y_pred, epsilon, 1.0)) + offsets
        targets = (1.0 - self.label_smoothing) * keras.ops.cast(y_true, y_pred.dtype) + \
            self.label_smoothing * keras.ops.softmax(offsets)
        return keras.losses.categorical_crossentropy(targets, logits, from_logits=True)

    def get_config(self):
        return {**super().get_config(), "offsets": self.offsets, "label_smoothing": self.label_smoothing}


def logit_offsets(logit_adjustment, labels, num_classes, sampling):
    """The offsets of `LogitAdjustedCrossentropy` for a training set: `logit_adjustment` x the log of each class's
    share of the training batches (an absent class counts as the rarest present one); None when it is 0."""
    if not logit_adjustment:
        return None
    shares = inputs.batch_class_shares(labels, num_classes, sampling)
    shares = np.where(shares > 0, shares, shares[shares > 0].min())
    return (logit_adjustment * np.log(shares)).tolist()


def phase_learning_rate(p, phase, steps_per_epoch):
    """The learning rate of `phase` of `plan(p)`: its own schedule, except that the fine-tuning phases of progressive
    resizing share one; the full-size phase decays by a cosine from the rate where the low-resolution one stopped."""
    if not (phase.number > 1 and p.train.low_resolution_epochs):
        return learning_rate_schedule(p.train.schedule, phase.learning_rate, phase.epochs - phase.initial_epoch,
                                      p.train.warmup_epochs, steps_per_epoch)
    whole = learning_rate_schedule(p.train.schedule, phase.learning_rate, p.train.fine_tune_epochs,
                                   p.train.warmup_epochs, steps_per_epoch)
    if phase.image_size or not callable(whole):  # the low-resolution phase, or a constant rate
        return whole
    start = float(whole((phase.initial_epoch - p.train.epochs) * steps_per_epoch))
    return keras.optimizers.schedules.CosineDecay(start, max(1, (phase.epochs - phase.initial_epoch) * steps_per_epoch),
                                                  alpha=0.0)


def learning_rate_schedule(schedule, peak, epochs, warmup_epochs, steps_per_epoch):
    """The learning rate of one phase: `peak` throughout (constant), or a linear warm-up from 0 to `peak` over
    `warmup_epochs` followed by a cosine decay to 0 over the rest of the phase's `epochs` (cosine)."""
    if schedule not in registry.SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of: {', '.join(registry.SCHEDULES)}")
    if schedule == "constant":
        return peak
    warmup_steps = int(round(min(warmup_epochs, epochs) * steps_per_epoch))
    decay_steps = max(1, epochs * steps_per_epoch - warmup_steps)
    return keras.optimizers.schedules.CosineDecay(0.0 if warmup_steps else peak, decay_steps, alpha=0.0,
                                                  warmup_target=peak if warmup_steps else None,
                                                  warmup_steps=warmup_steps)


def compile_model(model, optimizer="adam", learning_rate=1e-3, loss="crossentropy", label_smoothing=0.0,
                  focal_gamma=2.0, weight_decay=None, ema_momentum=None, rate_scales=None, logit_offsets=None,
                  momentum=0.0):
    """Compile with the loss (cross-entropy, categorical for softmax outputs and binary for sigmoid outputs on
    one-hot targets, or its focal form) and the metrics of `metric_names`. `learning_rate`: a number or a
    Keras schedule; `weight_decay`: decoupled weight decay, None for the optimizer's default; `ema_momentum`: keep an
    exponential moving average of the weights (None: none), which `make_callbacks(ema=True)` validates and saves;
    `rate_scales`: each variable's share of the learning rate by path (models.layer_rate_scales), None: one rate;
    `logit_offsets`: train a softmax with the logit-adjusted cross-entropy (see `logit_offsets`), None: plain;
    `momentum`: SGD's or RMSprop's (the others take none)."""
    if optimizer not in registry.OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(registry.OPTIMIZERS)}")
    if loss not in registry.LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of: {', '.join(registry.LOSSES)}")
    num_classes = model.output.shape[-1]
    sigmoid = model.get_layer("predictions").activation.__name__ == "sigmoid"
    losses = {("crossentropy", False): keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
              ("crossentropy", True): keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing),
              ("focal", False): keras.losses.CategoricalFocalCrossentropy(gamma=focal_gamma,
                                                                          label_smoothing=label_smoothing),
              ("focal", True): keras.losses.BinaryFocalCrossentropy(gamma=focal_gamma, label_smoothing=label_smoothing)}
    if logit_offsets is not None:
        if (loss, sigmoid) != ("crossentropy", False):
            raise ValueError("logit offsets adjust a softmax's cross-entropy; use loss crossentropy with a softmax")
        losses[(loss, sigmoid)] = LogitAdjustedCrossentropy(logit_offsets, label_smoothing)
    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"), BalancedAccuracy(num_classes)]
    metrics += [keras.metrics.TopKCategoricalAccuracy(k, name=f"top{k}_accuracy") for k in TOP_K if num_classes > k]
    metrics.append(keras.metrics.AUC(name="auc"))
    extra = {} if weight_decay is None else {"weight_decay": weight_decay}
    if momentum:
        if optimizer not in registry.MOMENTUM_OPTIMIZERS:
            raise ValueError(f"momentum is for {' or '.join(registry.MOMENTUM_OPTIMIZERS)}, not {optimizer}")
        extra["momentum"] = momentum
    if ema_momentum is not None:
        extra.update(use_ema=True, ema_momentum=ema_momentum)
    optimizer = getattr(keras.optimizers, registry.OPTIMIZERS[optimizer])(learning_rate=learning_rate, **extra)
    if rate_scales:
        _scale_rates(optimizer, rate_scales)
    model.compile(optimizer=optimizer, loss=losses[(loss, sigmoid)], metrics=metrics)
    return model


def _scale_rates(optimizer, rate_scales):
    """Make `optimizer` update each variable at its share of the learning rate (`rate_scales`: variable path ->
    share, 1 when absent; see models.layer_rate_scales); decoupled weight decay keeps the full rate. Patched on the
    instance rather than subclassed so that saved models name a stock Keras optimizer and load anywhere. It leans on
    Keras' optimizer internals (`_trainable_variables`, `_get_variable_index`), which .ci/colab checks on Colab's Keras
    as well."""
    stock_update_step = optimizer.update_step

    def update_step(gradient, variable, learning_rate):
        path = optimizer._trainable_variables[optimizer._get_variable_index(variable)].path
        return stock_update_step(gradient, variable, learning_rate * rate_scales.get(path, 1.0))

    optimizer.update_step = update_step


# ---- step 3: the phases --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Phase:
    number: int  # 1, then 2 (and 3) for fine-tuning
    name: str  # "train" (one phase), "head", "fine-tune" or "fine-tune, low resolution"
    initial_epoch: int
    epochs: int  # the epoch the phase trains until (Keras' `epochs`)
    learning_rate: float  # the peak learning rate
    trainable_layers: int  # of the backbone: -1 all, 0 none, N the last N
    cached: bool  # the head alone, trained on cached backbone features
    augmented: bool
    last: bool
    image_size: typing.Optional[int] = None  # px of the images it trains on; None: data.image_size
    plain_from: typing.Optional[int] = None  # the epoch from which only the exact right-angle views are drawn

    def describe(self):
        what = "the head on cached backbone features" if self.cached else (
            "the head, backbone frozen" if self.trainable_layers == 0 else
            f"{'all' if self.trainable_layers == -1 else f'the last {self.trainable_layers}'} backbone layers "
            "and the head")
        return (f"phase {self.number} ({self.name}): epochs {self.initial_epoch + 1}-{self.epochs}, {what}, "
                f"learning rate {self.learning_rate:g}{', augmented' if self.augmented else ''}"
                f"{f', at {self.image_size} px' if self.image_size else ''}"
                f"{f', from epoch {self.plain_from + 1} the right-angle views only' if self.plain_from else ''}")


def plan(p, multi_worker=False):
    """The phases of `p` (Params): one, or with train.fine_tune_epochs a head phase then a fine-tuning phase (split
    in two with train.low_resolution_epochs: the first epochs on downscaled images, the rest at full size).
    The head phase trains on cached features unless train.feature_cache is off (or under multi_worker, where
    every worker would write the same cache); a single phase does so only with a frozen backbone and no
    augmentation (train.mixup included), because cached features are of unaugmented images."""
    train, model = p.train, p.model
    augmented = inputs.asks_for_augmentation(dataclasses.asdict(train.augmentation)) or train.mixup > 0
    cache_allowed = train.feature_cache != "off" and not multi_worker
    if train.fine_tune_epochs:
        head_cached = cache_allowed
        phases = [Phase(1, "head", 0, train.epochs, train.learning_rate, 0, head_cached,
                        augmented and not head_cached, False)]
        switch = train.epochs + train.low_resolution_epochs
        if train.low_resolution_epochs:
            phases.append(Phase(2, "fine-tune, low resolution", train.epochs, switch, train.fine_tune_learning_rate,
                                model.trainable_layers, False, augmented, False, train.low_resolution))
        end = train.epochs + train.fine_tune_epochs
        phases.append(Phase(len(phases) + 1, "fine-tune", switch, end, train.fine_tune_learning_rate,
                            model.trainable_layers, False, augmented, True,
                            plain_from=end - train.plain_epochs if augmented and train.plain_epochs else None))
    else:
        cached = cache_allowed and model.trainable_layers == 0 and not augmented
        phases = [Phase(1, "train", 0, train.epochs, train.learning_rate, model.trainable_layers, cached,
                        augmented, True)]
    if train.feature_cache == "on" and not phases[0].cached:
        raise TrainingError("train.feature_cache: on needs a phase on a frozen backbone (model.trainable_layers: 0 "
                            "without augmentation, or the head phase of train.fine_tune_epochs) and no "
                            "train.strategy: multi_worker; use auto")
    return phases


@dataclasses.dataclass(frozen=True)
class PhaseResult:
    phase: Phase
    seconds: float  # wall time of this phase in this process (0 when it had finished before)
    resumed: bool  # it continued from model/backup/ or had finished before an interruption


def fit_phase(model, phase, data, p, run_dir, strategy, extra_callbacks=()):
    """Train `model` for one `phase` of `plan(p)`, writing into `output_dir(run_dir, strategy)`; resumes from
    model/backup/ after an interruption, and skips a phase that finished before one. A low-resolution phase trains
    a copy of `model` at its size, validated (and checkpointed) as `model` at full size."""
    started = time.monotonic()
    out_dir = output_dir(run_dir, strategy)
    (out_dir / "model").mkdir(parents=True, exist_ok=True)
    done = out_dir / "model" / f"phase{phase.number}_done.weights.h5"
    if not phase.last and done.is_file():
        model.load_weights(done)
        log.info("phase %d finished before an interruption: continuing with the next", phase.number)
        return PhaseResult(phase, 0.0, True)
    multi_worker = is_multi_worker(strategy)
    batch_size = p.train.batch_size * strategy.num_replicas_in_sync
    whole_batches = strategy.num_replicas_in_sync > 1
    if whole_batches and min(len(data.train.paths), len(data.validation.paths)) < batch_size:
        raise TrainingError(f"{strategy.num_replicas_in_sync} replicas need at least one global batch ({batch_size} "
                            f"images) in train and validation; lower train.batch_size")
    steps = len(data.train.paths) // batch_size if whole_batches else math.ceil(len(data.train.paths) / batch_size)
    plain = None
    if phase.plain_from is not None:
        with tf.device("/cpu:0"):  # read by tf.data on the host, not mirrored onto replicas
            plain = _PlainViewsFrom(phase.plain_from, steps, tf.Variable(1.0, trainable=False))
    train_data, val_data = _datasets(model, phase, data, p, run_dir, batch_size, whole_batches,
                                     plain and plain.strength)
    resuming = (out_dir / "model" / "backup" / f"phase{phase.number}").is_dir()
    history = artifacts.read_history(out_dir) if resuming or phase.number > 1 else None
    with strategy.scope():
        models.set_trainable_layers(model, phase.trainable_layers, p.model.freeze_batch_norm)
        fitted = models.head_model(model) if phase.cached else \
            models.at_image_size(model, phase.image_size) if phase.image_size else model
        rate = phase_learning_rate(p, phase, steps)
        scales = models.layer_rate_scales(fitted, p.train.layer_decay) if p.train.layer_decay < 1 and \
            phase.trainable_layers != 0 else None
        offsets = logit_offsets(p.train.logit_adjustment, data.train.labels, len(data.classes), p.train.sampling)
        compile_model(fitted, p.train.optimizer, rate, p.train.loss, label_smoothing=p.train.label_smoothing,
                      focal_gamma=p.train.focal_gamma, weight_decay=p.train.weight_decay,
                      ema_momentum=p.train.ema_momentum, rate_scales=scales, logit_offsets=offsets,
                      momentum=p.train.momentum)
        if phase.image_size:  # compiled only to be evaluated, at full size, by _ValidateAtFullSize
            compile_model(model, loss=p.train.loss, label_smoothing=p.train.label_smoothing,
                          focal_gamma=p.train.focal_gamma)
        if multi_worker:
            fit_under_multi_worker(fitted)
    mode = resolve_mode(p.train.monitor, p.train.monitor_mode)
    full_size = _ValidateAtFullSize(model, val_data) if phase.image_size else None
    callbacks = make_callbacks(out_dir, p.train.monitor, mode, p.train.reduce_lr, p.train.early_stopping,
                               phase=phase.number, best_so_far=best_epoch(history, p.train.monitor, mode)[1],
                               checkpoint_model=model if fitted is not model else None,
                               append_history=history is not None, ema=p.train.ema_momentum is not None,
                               validation=full_size) + ([plain] if plain else []) + list(extra_callbacks)
    weights = inputs.class_weights(p.train.class_weight, data.train.labels, data.classes)
    with strategy.scope() if multi_worker else contextlib.nullcontext():
        fitted.fit(train_data, validation_data=None if full_size else val_data, epochs=phase.epochs,
                   initial_epoch=phase.initial_epoch, class_weight=weights, callbacks=callbacks, shuffle=False,
                   verbose=2)  # tf.data shuffles
    if phase.image_size:
        model.set_weights(fitted.get_weights())
    if not phase.last:
        model.save_weights(done)
    else:
        for finished in (out_dir / "model").glob("phase*_done.weights.h5"):
            finished.unlink()
        backup = out_dir / "model" / "backup"
        if backup.is_dir() and not any(backup.iterdir()):
            backup.rmdir()
    return PhaseResult(phase, time.monotonic() - started, resuming)


def _datasets(model, phase, data, p, run_dir, batch_size, whole_batches, strength=None):
    """(train, validation) tf.data pipelines for `phase`: cached backbone features, or images (augmented in
    training when the phase is, at `strength`: see inputs.make_augmenter)."""
    train, validation, classes = data.train, data.validation, data.classes
    options = {"sampling": p.train.sampling, "seed": p.seed, "drop_remainder": whole_batches}
    if phase.cached:
        key = inputs.feature_cache_key(p.model, data.image_size, p.seed,
                                       resolve_precision(p.train.mixed_precision, p.model.backbone))
        extractor = models.feature_model(model)
        folder = Path(run_dir) / "features" / key
        features = {name: inputs.cached_features(extractor, folder, name, split.paths, data.image_size)
                    for name, split in (("train", train), ("validation", validation))}
        return (inputs.feature_dataset(features["train"], train.labels, len(classes), batch_size, shuffle=True,
                                       **options),
                inputs.feature_dataset(features["validation"], validation.labels, len(classes), batch_size,
                                       drop_remainder=whole_batches))
    augment, mix = ((inputs.make_augmenter(dataclasses.asdict(p.train.augmentation), seed=p.seed, strength=strength),
                     inputs.make_mixup(p.train.mixup, seed=p.seed, strength=strength))
                    if phase.augmented else (None, None))
    return (inputs.image_dataset(train.paths, train.labels, len(classes), data.image_size, batch_size, shuffle=True,
                                 augment=augment, mix=mix, resize_to=phase.image_size, **options),
            inputs.image_dataset(validation.paths, validation.labels, len(classes), data.image_size, batch_size,
                                 drop_remainder=whole_batches))


def resolve_mode(monitor, mode="auto"):
    """min or max for `monitor`, inferred as Keras does (accuracy and AUC go up) when mode is auto."""
    if mode != "auto":
        return mode
    return "max" if any(word in monitor for word in ("acc", "auc")) else "min"


def make_callbacks(run_dir, monitor, mode, reduce_lr=None, early_stopping=None, phase=1, best_so_far=None,
                   checkpoint_model=None, append_history=False, ema=False, validation=None):
    """ModelCheckpoint (best by `monitor` to model/best.keras; of `checkpoint_model` when the fitted model
    is only its head or a copy at another size), BackupAndRestore (model/backup/phase<N>), CSVLogger
    (model/history.csv), TensorBoard (logs/), ReduceLROnPlateau and EarlyStopping from their params (or None). With
    `ema`, validation and the checkpoint see the moving average of the weights (SwapEMAWeights), the backup the
    weights themselves. `validation`: a callback that adds the val_* metrics, run before the checkpoint."""
    run_dir = Path(run_dir)
    checkpoint = _Checkpoint(checkpoint_model, str(run_dir / artifacts.MODEL), monitor=monitor,
                             mode=mode, save_best_only=True, initial_value_threshold=best_so_far)
    callbacks = [keras.callbacks.BackupAndRestore(str(run_dir / "model" / "backup" / f"phase{phase}")),
                 *([keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if ema else []),
                 _LearningRateLog(), *([validation] if validation else []), checkpoint,
                 keras.callbacks.CSVLogger(str(run_dir / artifacts.HISTORY), append=append_history),
                 keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False)]
    if reduce_lr:
        options = dataclasses.asdict(reduce_lr) if dataclasses.is_dataclass(reduce_lr) else dict(reduce_lr)
        options["mode"] = resolve_mode(options.get("monitor", "val_loss"), options.get("mode", "auto"))
        callbacks.append(keras.callbacks.ReduceLROnPlateau(**options))
    if early_stopping:
        options = dataclasses.asdict(early_stopping) if dataclasses.is_dataclass(early_stopping) else dict(early_stopping)
        options["mode"] = resolve_mode(options.get("monitor", "val_loss"), options.get("mode", "auto"))
        callbacks.append(keras.callbacks.EarlyStopping(**options))
    return callbacks


class _LearningRateLog(keras.callbacks.Callback):
    """Adds the epoch's last learning rate to the logs, so history.csv and the curves show the schedule."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class _PlainViewsFrom(keras.callbacks.Callback):
    """Sets `strength` (a tf.Variable: see inputs.make_augmenter) to 0 for the epochs from `first` on (counted from 0,
    as Keras counts), 1 before, so that every batch of an epoch is drawn at one strength. Keras makes the next
    epoch's iterator right after an epoch's last batch, before validation; a local tf.data iterator draws nothing
    until it is first read (after on_epoch_begin), but one that prefetches as soon as it is made (to devices) would
    draw during validation, so the switch comes at the end of the last batch before `first`, and again at the start
    of each epoch (a run resumed in the tail)."""

    def __init__(self, first, steps, strength):
        super().__init__()
        self.first, self.steps, self.strength, self.epoch = first, steps, strength, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.strength.assign(0.0 if epoch >= self.first else 1.0)

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == self.first - 1 and batch >= self.steps - 1:
            self.strength.assign(0.0)


class _ValidateAtFullSize(keras.callbacks.Callback):
    """Validation of a phase that trains a copy of the model on downscaled images: at each epoch's end (after
    SwapEMAWeights put the moving average in place) the copy's weights go into the full-size model, which is
    evaluated on the full-size validation images; its metrics are logged as val_*, as Keras' validation would."""

    def __init__(self, full_model, validation_data):
        super().__init__()
        self.full_model, self.validation_data = full_model, validation_data

    def on_epoch_end(self, epoch, logs=None):
        self.full_model.set_weights(self.model.get_weights())
        results = self.full_model.evaluate(self.validation_data, verbose=0, return_dict=True)
        if logs is not None:
            logs.update({f"val_{name}": value for name, value in results.items()})


class _Checkpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint that writes atomically (to a temporary name, renamed over the old checkpoint only once
    complete, so a full disk or a kill never leaves a damaged best.keras), and that can save another model
    than the one being fitted: the full model whose head is trained on cached features (they share the head)."""

    def __init__(self, target_model, filepath, *args, **kwargs):
        super().__init__(filepath, *args, **kwargs)
        self._target_model = target_model
        self._final_path = Path(filepath)
        self._partial_path = self._final_path.with_name(f".partial-{self._final_path.name}")

    def set_model(self, model):
        super().set_model(self._target_model or model)

    def _get_file_path(self, epoch, batch, logs):
        return str(self._partial_path)

    def _save_model(self, epoch, batch, logs):
        self._partial_path.unlink(missing_ok=True)  # left by a save that was killed: never install it
        try:
            super()._save_model(epoch, batch, logs)
        except OSError as error:
            self._partial_path.unlink(missing_ok=True)
            kept = f"the previous checkpoint {self._final_path} is kept" if self._final_path.is_file() else \
                "no earlier checkpoint exists"
            raise TrainingError(f"cannot write the checkpoint of epoch {epoch + 1} ({error.strerror or error}); "
                                f"{kept}. Free disk space, then rerun the notebook to resume") from error
        if self._partial_path.is_file():
            os.replace(self._partial_path, self._final_path)


# ---- showing the augmentation --------------------------------------------------------------------------

def augmented_samples(run_dir, data, p, strategy):
    """(original, augmented) float RGB [0, 255] images (SAMPLE_IMAGES, S, S, 3) of training images spread over
    the classes, as the augmented phase sees them; also written to TensorBoard as "augmented_training_images"."""
    spread = np.unique(np.linspace(0, len(data.train.paths) - 1, SAMPLE_IMAGES).astype(int))
    originals = inputs.load_processed([data.train.paths[i] for i in spread], data.image_size).astype(np.float32)
    augment = inputs.make_augmenter(dataclasses.asdict(p.train.augmentation), seed=p.seed)
    augmented = originals if augment is None else keras.ops.convert_to_numpy(augment(originals))
    writer = tf.summary.create_file_writer(str(output_dir(run_dir, strategy) / "logs" / "train"))
    with writer.as_default():
        tf.summary.image("augmented_training_images", augmented / 255.0, step=0, max_outputs=len(augmented))
    writer.close()
    return originals, augmented


# ---- step 4: the summary -------------------------------------------------------------------------------

def best_epoch(history, monitor, mode):
    """(1-based epoch, value) of the best `monitor` in a history table, or (None, None)."""
    if history is None or monitor not in history or history.empty:
        return None, None
    index = history[monitor].idxmax() if mode == "max" else history[monitor].idxmin()
    return int(history["epoch"][index]) + 1, float(history[monitor][index])


def summarize(run_dir, p, data, strategy, results):
    """Write training.json (and return it): the best epoch and its validation metrics, time, device, dtype
    policy, the phases as run, and what the split held."""
    out_dir = output_dir(run_dir, strategy)
    history = artifacts.read_history(out_dir)
    mode = resolve_mode(p.train.monitor, p.train.monitor_mode)
    epoch, value = best_epoch(history, p.train.monitor, mode)
    best_row = {} if epoch is None else history[history["epoch"] == epoch - 1].iloc[-1].to_dict()
    summary = {
        "epochs_run": 0 if history is None else len(history), "best_epoch": epoch, "monitor": p.train.monitor,
        "monitor_mode": mode, "best_value": value,
        "best_validation_metrics": {key[4:]: float(value) for key, value in best_row.items() if key.startswith("val_")},
        "wall_time_seconds": round(sum(result.seconds for result in results), 1),
        "phases": [{**dataclasses.asdict(result.phase), "seconds": round(result.seconds, 1),
                    "resumed": result.resumed} for result in results],
        "device": describe_device(strategy), "strategy": STRATEGY_NAMES.get(type(strategy).__name__,
                                                                            type(strategy).__name__),
        "replicas": strategy.num_replicas_in_sync,
        "dtype_policy": resolve_precision(p.train.mixed_precision, p.model.backbone),
        "cpu_bf16_flags": sorted(cpu_flags() & set(BF16_CPU_FLAGS)), "seed": p.seed,
        "deterministic": p.train.deterministic, "feature_cache": any(result.phase.cached for result in results),
        "classes": data.classes, "train_images": len(data.train.paths),
        "validation_images": len(data.validation.paths),
    }
    artifacts.write_json(out_dir / artifacts.TRAINING, summary)
    log.info("training finished: best epoch %s, %s %s", epoch, p.train.monitor, value)
    return summary


def train(run_dir, p, strategy="auto", extra_callbacks=(), image_root=None):
    """All the steps in one call: (model, summary). `strategy`: a name for `make_strategy` or a strategy."""
    strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
    data = read_data(run_dir, p.data.image_size, image_root)
    model = build(p, data.classes, strategy)
    results = [fit_phase(model, phase, data, p, run_dir, strategy, extra_callbacks)
               for phase in plan(p, is_multi_worker(strategy))]
    return model, summarize(run_dir, p, data, strategy, results)
