"""Training: distribution strategy and mixed precision, compile, callbacks, the (optionally two-phase)
fit that resumes after an interruption, and fast frozen-backbone training on cached features.

`train()` is what notebook 03 calls; it writes into the run folder model/best.keras,
model/history.csv, model/backup/ (while running), logs/ (TensorBoard), features/ and training.json.
"""

import contextlib
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from lib import inputs, models
from lib.errors import TrainingError

log = logging.getLogger(__name__)

OPTIMIZERS = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
              "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
STRATEGIES = ("auto", "default", "mirrored", "tpu", "multi_worker")
STRATEGY_NAMES = {"_DefaultDistributionStrategy": "default", "MirroredStrategy": "mirrored", "TPUStrategy": "tpu",
                  "MultiWorkerMirroredStrategy": "multi_worker", "CollectiveAllReduceStrategy": "multi_worker"}
TOP_K = (2, 3)  # top-k accuracies, logged only when there are more than k classes
SAMPLE_IMAGES = 8  # augmented training images shown in TensorBoard


def make_strategy(name="auto"):
    """A tf.distribute strategy: auto (TPU if one answers, else MirroredStrategy over >1 GPU, else the
    default), default, mirrored (all GPUs, or all logical CPUs when there is no GPU), tpu, or
    multi_worker (MultiWorkerMirroredStrategy over the cluster that $TF_CONFIG describes, one process per
    machine). Create the strategy before TensorFlow does anything else, and before building models."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
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


def set_mixed_precision(mode="auto"):
    """Set Keras' global dtype policy: auto = mixed_float16 on a GPU, float32 otherwise; off = float32.
    Returns the policy name. Call before building the model."""
    if mode not in ("auto", "off", "mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"unknown mixed_precision {mode!r}; choose one of: auto, off, mixed_float16, "
                         f"mixed_bfloat16")
    policy = {"auto": "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32",
              "off": "float32"}.get(mode, mode)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def describe_device(strategy):
    """One line naming the hardware and the number of replicas, for the notebook and training.json."""
    tpus, gpus = tf.config.list_logical_devices("TPU"), tf.config.list_physical_devices("GPU")
    if tpus:
        hardware = f"TPU ({len(tpus)} cores)"
    elif gpus:  # the model name (e.g. "Tesla T4"), which tells what speed and mixed precision to expect
        hardware = "GPU " + ", ".join(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
                                      for gpu in gpus)
    else:
        hardware = f"CPU ({os.cpu_count()} cores, {platform.machine()})"
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


def compile_model(model, optimizer="adam", learning_rate=1e-3):
    """Compile with cross-entropy (categorical for softmax, binary for sigmoid outputs on one-hot
    targets) and metrics accuracy, top-2/top-3 accuracy (only when there are more classes than k), AUC."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
    sigmoid = model.get_layer("predictions").activation.__name__ == "sigmoid"
    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    metrics += [keras.metrics.TopKCategoricalAccuracy(k, name=f"top{k}_accuracy")
                for k in TOP_K if model.output.shape[-1] > k]
    metrics.append(keras.metrics.AUC(name="auc"))
    model.compile(optimizer=OPTIMIZERS[optimizer](learning_rate=learning_rate),
                  loss="binary_crossentropy" if sigmoid else "categorical_crossentropy", metrics=metrics)
    return model


def resolve_mode(monitor, mode="auto"):
    """min or max for `monitor`, inferred as Keras does (accuracy and AUC go up) when mode is auto."""
    if mode != "auto":
        return mode
    return "max" if any(word in monitor for word in ("acc", "auc")) else "min"


def metric_names(num_classes):
    """What `compile_model` logs for a model with `num_classes` outputs (each also with a val_ prefix)."""
    return ["loss", "accuracy"] + [f"top{k}_accuracy" for k in TOP_K if num_classes > k] + ["auc"]


def _check_monitor(monitor, model, what):
    known = metric_names(model.output.shape[-1])
    allowed = known + [f"val_{name}" for name in known]
    if monitor not in allowed:
        raise TrainingError(f"{what}: unknown metric {monitor!r} for this model; choose one of: {', '.join(allowed)}")


def make_callbacks(run_dir, monitor, mode, reduce_lr=None, early_stopping=None, phase=1, best_so_far=None,
                   checkpoint_model=None, append_history=False):
    """ModelCheckpoint (best by `monitor` to model/best.keras; of `checkpoint_model` when the fitted model
    is only its head), BackupAndRestore (model/backup/phase<N>), CSVLogger (model/history.csv),
    TensorBoard (logs/), ReduceLROnPlateau and EarlyStopping when given as dicts of their arguments."""
    run_dir = Path(run_dir)
    checkpoint = _Checkpoint(checkpoint_model, str(run_dir / "model" / "best.keras"), monitor=monitor,
                             mode=mode, save_best_only=True, initial_value_threshold=best_so_far)
    callbacks = [keras.callbacks.BackupAndRestore(str(run_dir / "model" / "backup" / f"phase{phase}")),
                 checkpoint,
                 keras.callbacks.CSVLogger(str(run_dir / "model" / "history.csv"), append=append_history),
                 keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False)]
    if reduce_lr:
        options = dict(reduce_lr)
        options["mode"] = resolve_mode(options.get("monitor", "val_loss"), options.get("mode", "auto"))
        callbacks.append(keras.callbacks.ReduceLROnPlateau(**options))
    if early_stopping:
        options = dict(early_stopping)
        options["mode"] = resolve_mode(options.get("monitor", "val_loss"), options.get("mode", "auto"))
        callbacks.append(keras.callbacks.EarlyStopping(**options))
    return callbacks


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


def log_augmented_images(log_dir, images):
    """Write float RGB [0, 255] images (N, S, S, 3) as an image summary "augmented_training_images"."""
    writer = tf.summary.create_file_writer(str(Path(log_dir) / "train"))
    with writer.as_default():
        tf.summary.image("augmented_training_images", np.asarray(images) / 255.0, step=0,
                         max_outputs=len(images))
    writer.close()


def read_history(run_dir):
    """model/history.csv as a DataFrame (one row per finished epoch, last write wins), or None."""
    path = Path(run_dir) / "model" / "history.csv"
    if not path.is_file() or path.stat().st_size == 0:
        return None
    return pd.read_csv(path).drop_duplicates("epoch", keep="last").reset_index(drop=True)


def _best(history, monitor, mode):
    if history is None or monitor not in history or history.empty:
        return None, None
    index = history[monitor].idxmax() if mode == "max" else history[monitor].idxmin()
    return int(history["epoch"][index]) + 1, float(history[monitor][index])


def train(run_dir, model_options, image_size, seed=42, epochs=30, batch_size=32, optimizer="adam",
          learning_rate=1e-3, class_weight=None, monitor="val_loss", monitor_mode="auto",
          augmentation=None, reduce_lr=None, early_stopping=None, fine_tune_epochs=0,
          fine_tune_learning_rate=1e-5, feature_cache="auto", strategy="auto", mixed_precision="auto",
          extra_callbacks=()):
    """Train a classifier on the run's manifest and write its products (see the module docstring).

    model_options: keyword arguments of `models.build_model` except num_classes/image_size (backbone,
    alpha, weights, head, pooling, dense_units, dropout, trainable_layers, output_activation).
    augmentation / reduce_lr / early_stopping: dicts in the params vocabulary, or None.
    fine_tune_epochs > 0: first `epochs` with the backbone frozen, then `fine_tune_epochs` with
    `trainable_layers` trainable at `fine_tune_learning_rate`. feature_cache: auto | on | off.
    strategy: a name for `make_strategy` or a tf.distribute.Strategy; under multi_worker, only the chief writes
    into `run_dir` (the other workers write into a temporary folder, removed at the end). Rerunning after an
    interruption resumes at the last finished epoch. Returns (model, summary dict also written to training.json).
    """
    strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
    run_dir = Path(run_dir)
    with _output_dir(run_dir, strategy) as out_dir:
        started = time.time()
        if feature_cache not in ("auto", "on", "off"):
            raise ValueError(f"unknown feature_cache {feature_cache!r}; choose one of: auto, on, off")
        strategy_name = STRATEGY_NAMES.get(type(strategy).__name__, type(strategy).__name__)
        multi_worker = is_multi_worker(strategy)
        if multi_worker and feature_cache == "on":
            raise TrainingError("train.feature_cache: on does not work with train.strategy: multi_worker (every "
                                "worker would compute and write the same cache); use auto")
        (out_dir / "model").mkdir(parents=True, exist_ok=True)
        policy = set_mixed_precision(mixed_precision)
        manifest, classes = inputs.read_split(run_dir)
        train_paths, train_labels = inputs.split_arrays(manifest, classes, "train", run_dir)
        val_paths, val_labels = inputs.split_arrays(manifest, classes, "validation", run_dir)
        weights = inputs.class_weights(class_weight, train_labels, classes)
        augment = inputs.make_augmenter(augmentation, seed=seed)
        batch_size = batch_size * strategy.num_replicas_in_sync
        whole_batches = strategy.num_replicas_in_sync > 1
        if whole_batches and min(len(train_paths), len(val_paths)) < batch_size:
            raise TrainingError(f"{strategy.num_replicas_in_sync} replicas need at least one global batch "
                                f"({batch_size} images) in train and validation; lower train.batch_size")
        if whole_batches:
            log.warning("%d replicas: the last partial batch is skipped (%d train, %d validation images per epoch)",
                        strategy.num_replicas_in_sync, len(train_paths) % batch_size, len(val_paths) % batch_size)
        mode = resolve_mode(monitor, monitor_mode)

        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        final_trainable = model_options.get("trainable_layers", -1)
        with strategy.scope():
            model = models.build_model(num_classes=len(classes), image_size=image_size, clear_session=False,
                                       **{**model_options, "trainable_layers": 0 if fine_tune_epochs else final_trainable})
        _check_monitor(monitor, model, "train.monitor")
        for name, options in (("train.reduce_lr", reduce_lr), ("train.early_stopping", early_stopping)):
            if options:
                _check_monitor(options.get("monitor", "val_loss"), model, f"{name}.monitor")
        if augment is not None:
            spread = np.unique(np.linspace(0, len(train_paths) - 1, SAMPLE_IMAGES).astype(int))  # several classes
            sample = inputs.make_dataset([train_paths[i] for i in spread], train_labels[spread], len(classes),
                                         image_size, len(spread), augment=augment)
            log_augmented_images(out_dir / "logs", next(iter(sample))[0])

        phases = [(1, epochs, learning_rate, 0 if fine_tune_epochs else final_trainable)]
        if fine_tune_epochs:
            phases.append((2, epochs + fine_tune_epochs, fine_tune_learning_rate, final_trainable))
        phase_one_weights = out_dir / "model" / "phase1_done.weights.h5"
        used_cache = False
        for phase, end_epoch, rate, trainable in phases:
            if phase == 1 and len(phases) == 2 and phase_one_weights.is_file():
                model.load_weights(phase_one_weights)  # phase 1 finished before an interruption
                log.info("phase 1 already finished: resuming with fine-tuning")
                continue
            resuming = (out_dir / "model" / "backup" / f"phase{phase}").is_dir()
            history = read_history(out_dir) if resuming or phase == 2 else None
            cacheable = trainable == 0 and augment is None
            if feature_cache == "on" and not cacheable:
                raise TrainingError("train.feature_cache: on needs a frozen backbone (model.trainable_layers: 0, "
                                    "or the head phase of fine_tune_epochs) and no augmentation; use auto")
            use_cache = cacheable and feature_cache != "off" and not multi_worker
            with strategy.scope():
                models.set_trainable_layers(model, trainable)
                fitted = models.head_model(model) if use_cache else model
                compile_model(fitted, optimizer, rate)
                if multi_worker:
                    fit_under_multi_worker(fitted)
            callbacks = make_callbacks(out_dir, monitor, mode, reduce_lr, early_stopping, phase=phase,
                                       best_so_far=_best(history, monitor, mode)[1],
                                       checkpoint_model=model if use_cache else None,
                                       append_history=history is not None) + list(extra_callbacks)
            if use_cache:
                key = inputs.feature_cache_key(model_options, image_size, seed)
                train_data, val_data = (
                    inputs.feature_dataset(model, run_dir, key, split, paths, labels, len(classes), image_size,
                                             batch_size, shuffle=split == "train", seed=seed,
                                             drop_remainder=whole_batches)
                    for split, paths, labels in (("train", train_paths, train_labels),
                                                 ("validation", val_paths, val_labels)))
            else:
                train_data = inputs.make_dataset(train_paths, train_labels, len(classes), image_size, batch_size,
                                                 shuffle=True, seed=seed, augment=augment, drop_remainder=whole_batches)
                val_data = inputs.make_dataset(val_paths, val_labels, len(classes), image_size, batch_size,
                                               drop_remainder=whole_batches)
            used_cache = used_cache or use_cache
            with strategy.scope() if multi_worker else contextlib.nullcontext():
                fitted.fit(train_data, validation_data=val_data, epochs=end_epoch,
                           initial_epoch=phases[0][1] * (phase - 1), class_weight=weights, callbacks=callbacks,
                           shuffle=False, verbose=2)  # tf.data shuffles
            if phase == 1 and len(phases) == 2:
                model.save_weights(phase_one_weights)
        phase_one_weights.unlink(missing_ok=True)
        if (out_dir / "model" / "backup").is_dir() and not any((out_dir / "model" / "backup").iterdir()):
            (out_dir / "model" / "backup").rmdir()

        history = read_history(out_dir)
        best_epoch, best_value = _best(history, monitor, mode)
        summary = {"epochs_run": 0 if history is None else len(history), "best_epoch": best_epoch,
                   "monitor": monitor, "monitor_mode": mode, "best_value": best_value,
                   "wall_time_seconds": round(time.time() - started, 1), "device": describe_device(strategy),
                   "strategy": strategy_name, "replicas": strategy.num_replicas_in_sync, "dtype_policy": policy,
                   "feature_cache": used_cache, "classes": classes, "train_images": len(train_paths),
                   "validation_images": len(val_paths)}
        (out_dir / "training.json").write_text(json.dumps(summary, indent=2))
        log.info("training finished: %s", summary)
        return model, summary


@contextlib.contextmanager
def _output_dir(run_dir, strategy):
    """Where this process writes what training makes: the run folder, or, on a non-chief worker, a temporary
    folder removed afterwards (the workers share the run folder's data, and only the chief's products count)."""
    if is_chief(strategy):
        yield run_dir
        return
    with tempfile.TemporaryDirectory(prefix="worker-") as worker_dir:
        yield Path(worker_dir)
