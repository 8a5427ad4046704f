"""Training: distribution strategy and mixed precision, compile, callbacks, the (optionally two-phase)
fit that resumes after an interruption, and fast frozen-backbone training on cached features.

`train()` is what notebook 03 calls; it writes into the run folder model/best.keras,
model/history.csv, model/backup/ (while running), logs/ (TensorBoard), features/ and training.json.
"""

import json
import logging
import os
import platform
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
STRATEGY_NAMES = {"_DefaultDistributionStrategy": "default", "MirroredStrategy": "mirrored", "TPUStrategy": "tpu"}
TOP_K = (2, 3)  # top-k accuracies, logged only when there are more than k classes
SAMPLE_IMAGES = 8  # augmented training images shown in TensorBoard


def make_strategy(name="auto"):
    """A tf.distribute strategy: auto (TPU if one answers, else MirroredStrategy over >1 GPU, else the
    default), default, mirrored (all GPUs, or all logical CPUs when there is no GPU) or tpu.
    multi_worker raises TrainingError: Keras 3 cannot fit() under MultiWorkerMirroredStrategy.
    Create the strategy before building models."""
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
        # Measured here: with 2 workers on 127.0.0.1, Keras 3.15 fit() fails with "Attempt to convert a
        # value (PerReplica ...) to a Tensor"; upstream: keras-team/keras#20585 (open). Refuse clearly
        # instead of starting a cluster that cannot train.
        raise TrainingError("train.strategy: multi_worker (MultiWorkerMirroredStrategy) does not work with "
                            "Keras 3 fit() (keras-team/keras#20585); use mirrored for several GPUs on one "
                            "machine, or auto")
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
    accelerators = tf.config.list_logical_devices("TPU") or tf.config.list_logical_devices("GPU")
    hardware = ", ".join(d.name for d in accelerators) or f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    return f"{hardware}; {type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s)"


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
    """ModelCheckpoint that can save another model than the one being fitted: the full model whose head
    is trained on cached features (the two share the head's layers)."""

    def __init__(self, target_model, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._target_model = target_model

    def set_model(self, model):
        super().set_model(self._target_model or model)


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
    strategy: a name for `make_strategy` or a tf.distribute.Strategy. Rerunning after an interruption
    resumes at the last finished epoch. Returns (model, summary dict also written to training.json).
    """
    started = time.time()
    run_dir = Path(run_dir)
    if feature_cache not in ("auto", "on", "off"):
        raise ValueError(f"unknown feature_cache {feature_cache!r}; choose one of: auto, on, off")
    strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
    strategy_name = STRATEGY_NAMES.get(type(strategy).__name__, type(strategy).__name__)
    (run_dir / "model").mkdir(parents=True, exist_ok=True)
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
        log_augmented_images(run_dir / "logs", next(iter(sample))[0])

    phases = [(1, epochs, learning_rate, 0 if fine_tune_epochs else final_trainable)]
    if fine_tune_epochs:
        phases.append((2, epochs + fine_tune_epochs, fine_tune_learning_rate, final_trainable))
    phase_one_weights = run_dir / "model" / "phase1_done.weights.h5"
    used_cache = False
    for phase, end_epoch, rate, trainable in phases:
        if phase == 1 and len(phases) == 2 and phase_one_weights.is_file():
            model.load_weights(phase_one_weights)  # phase 1 finished before an interruption
            log.info("phase 1 already finished: resuming with fine-tuning")
            continue
        resuming = (run_dir / "model" / "backup" / f"phase{phase}").is_dir()
        history = read_history(run_dir) if resuming or phase == 2 else None
        cacheable = trainable == 0 and augment is None
        if feature_cache == "on" and not cacheable:
            raise TrainingError("train.feature_cache: on needs a frozen backbone (model.trainable_layers: 0, "
                                "or the head phase of fine_tune_epochs) and no augmentation; use auto")
        use_cache = cacheable and feature_cache != "off"
        with strategy.scope():
            models.set_trainable_layers(model, trainable)
            fitted = models.head_model(model) if use_cache else model
            compile_model(fitted, optimizer, rate)
        callbacks = make_callbacks(run_dir, monitor, mode, reduce_lr, early_stopping, phase=phase,
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
        fitted.fit(train_data, validation_data=val_data, epochs=end_epoch, initial_epoch=phases[0][1] * (phase - 1),
                   class_weight=weights, callbacks=callbacks, shuffle=False, verbose=2)  # tf.data shuffles
        if phase == 1 and len(phases) == 2:
            model.save_weights(phase_one_weights)
    phase_one_weights.unlink(missing_ok=True)
    if (run_dir / "model" / "backup").is_dir() and not any((run_dir / "model" / "backup").iterdir()):
        (run_dir / "model" / "backup").rmdir()

    history = read_history(run_dir)
    best_epoch, best_value = _best(history, monitor, mode)
    summary = {"epochs_run": 0 if history is None else len(history), "best_epoch": best_epoch,
               "monitor": monitor, "monitor_mode": mode, "best_value": best_value,
               "wall_time_seconds": round(time.time() - started, 1), "device": describe_device(strategy),
               "strategy": strategy_name, "replicas": strategy.num_replicas_in_sync, "dtype_policy": policy,
               "feature_cache": used_cache, "classes": classes, "train_images": len(train_paths),
               "validation_images": len(val_paths)}
    (run_dir / "training.json").write_text(json.dumps(summary, indent=2))
    log.info("training finished: %s", summary)
    return model, summary
