"""Specification of lib.training: the steps (read the split, build, plan, fit each phase, summarise), what a run
folder holds after training, the same model from the same params, the head trained on cached features while
fine-tuning is augmented, the learning-rate schedule, the balanced-accuracy metric, mixed precision that stays
on, resuming after a kill, and the distribution strategies.

Models and data are tiny (small_cnn at 32 px, tens of synthetic lesions); strategies and the resume test run
in subprocesses because TensorFlow fixes its devices and cluster at start-up.
"""

import errno
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from sklearn.metrics import balanced_accuracy_score

from lib import artifacts, models, params, paths, training
from lib.errors import TrainingError

SMALL_MODEL = {"backbone": "small_cnn", "weights": None, "alpha": 0.5, "dropout": 0.0}


def tiny_params(model=None, **train):
    """Params of a tiny run: small_cnn at 32 px, float32, batch 8, and the train.* keys given."""
    return params.from_dict({"name": "tiny", "data": {"image_size": 32}, "model": {**SMALL_MODEL, **(model or {})},
                             "train": {"batch_size": 8, "mixed_precision": "off", **train}})


def weights_digest(model):
    return hashlib.sha256(b"".join(weight.tobytes() for weight in model.get_weights())).hexdigest()


# A training run in a fresh interpreter: argv[1] is a JSON {"run_dir", "params" (a params dict), "strategy"}.
# KILL_AFTER_EPOCH=n kills the process (SIGKILL) right after epoch n (1-based) was saved.
# LOGICAL_CPUS=n splits the CPU into n logical devices before TensorFlow starts.
SCRIPT = textwrap.dedent("""
    import hashlib, json, os, signal, sys
    import tensorflow as tf
    if os.environ.get("LOGICAL_CPUS"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * int(os.environ["LOGICAL_CPUS"]))
    import keras
    from lib import params, training

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == int(os.environ.get("KILL_AFTER_EPOCH", 0)):
                os.kill(os.getpid(), signal.SIGKILL)

    job = json.loads(sys.argv[1])
    strategy = training.make_strategy(job.get("strategy", "default"))
    model, summary = training.train(job["run_dir"], params.from_dict(job["params"]), strategy=strategy,
                                    extra_callbacks=[Kill()])
    print("SUMMARY", json.dumps(summary))
    print("WEIGHTS", hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest())
""")


def job_for(run_dir, strategy="default", **train):
    return {"run_dir": str(run_dir), "strategy": strategy, "params": tiny_params(**train).to_dict()}


def run_script(job, env=None, check=True):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(paths.PROJECT_ROOT), **(env or {})}
    process = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(job)], env=environment,
                             capture_output=True, text=True, timeout=300)
    if check and process.returncode != 0:
        raise AssertionError(f"training subprocess failed ({process.returncode}):\n{process.stderr[-3000:]}")
    return process


def summary_from(stdout):
    return json.loads(stdout.split("SUMMARY ", 1)[1].splitlines()[0])


def scalar_tags(event_dir):
    tags = set()
    for path in event_dir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_two_phase_training_writes_checkpoint_history_tensorboard_and_summary(run_folder):
    p = tiny_params(epochs=2, fine_tune_epochs=1, fine_tune_learning_rate=1e-4, class_weight="balanced",
                    layer_decay=0.8, monitor="val_accuracy",
                    augmentation={"horizontal_flip": True, "rotation_range": 20},
                    reduce_lr={"monitor": "val_loss", "patience": 1}, early_stopping={"patience": 5})
    model, summary = training.train(run_folder, p, strategy="default")
    history = pd.read_csv(run_folder / artifacts.HISTORY)
    assert list(history["epoch"]) == [0, 1, 2]  # 2 head epochs, then 1 fine-tuning epoch
    assert {"loss", "val_loss", "accuracy", "balanced_accuracy", "val_balanced_accuracy", "top2_accuracy", "auc",
            "learning_rate"} <= set(history.columns)
    saved = json.loads((run_folder / artifacts.TRAINING).read_text())
    assert saved == summary
    assert saved["epochs_run"] == 3 and saved["monitor"] == "val_accuracy" and saved["monitor_mode"] == "max"
    assert saved["best_value"] == history["val_accuracy"].max()
    best = history[history["epoch"] == saved["best_epoch"] - 1].iloc[0]
    assert saved["best_validation_metrics"]["balanced_accuracy"] == pytest.approx(best["val_balanced_accuracy"])
    assert [phase["name"] for phase in saved["phases"]] == ["head", "fine-tune"]
    assert saved["feature_cache"] is True and "CPU" in saved["device"] and saved["dtype_policy"] == "float32"
    best_model = keras.models.load_model(run_folder / artifacts.MODEL)
    assert best_model.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0).shape == (1, 3)
    assert not (run_folder / "model" / "backup").exists()  # removed once training finished
    assert not (run_folder / "model" / "phase1_done.weights.h5").exists()
    assert {"epoch_loss", "epoch_learning_rate"} <= scalar_tags(run_folder / "logs" / "train")
    assert "epoch_loss" in scalar_tags(run_folder / "logs" / "validation")


@pytest.mark.slow
def test_the_head_phase_trains_on_cached_features_while_fine_tuning_is_augmented(run_folder):
    p = tiny_params(epochs=1, fine_tune_epochs=1, augmentation={"horizontal_flip": True, "rotate90": True})
    head, tune = training.plan(p)
    assert (head.cached, head.augmented, head.trainable_layers) == (True, False, 0)
    assert (tune.cached, tune.augmented, tune.trainable_layers) == (False, True, -1)
    _, summary = training.train(run_folder, p, strategy="default")
    assert [(phase["cached"], phase["augmented"]) for phase in summary["phases"]] == [(True, False), (False, True)]
    assert len(list((run_folder / "features").glob("*/train.npy"))) == 1


def test_progressive_resizing_fine_tunes_on_downscaled_images_first_validating_at_full_size(run_folder):
    p = tiny_params(epochs=1, fine_tune_epochs=4, low_resolution_epochs=2, low_resolution=16, schedule="cosine",
                    fine_tune_learning_rate=1e-3, augmentation={"horizontal_flip": True}, monitor="val_loss")
    head, low, full = training.plan(p)
    assert (low.name, low.initial_epoch, low.epochs, low.image_size, low.last) == \
        ("fine-tune, low resolution", 1, 3, 16, False)
    assert (full.initial_epoch, full.epochs, full.image_size, full.last) == (3, 5, None, True)
    seen = []

    class Sizes(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if len(self.model.input.shape) == 4:  # images, not the head phase's cached features
                seen.append(self.model.input.shape[1])

    model, summary = training.train(run_folder, p, strategy="default", extra_callbacks=[Sizes()])
    assert sorted(set(seen)) == [16, 32] and seen[-1] == 32  # fine-tuning at 16 px, then at 32
    history = pd.read_csv(run_folder / artifacts.HISTORY)
    assert list(history["epoch"]) == [0, 1, 2, 3, 4] and history["val_loss"].notna().all()
    assert [phase["image_size"] for phase in summary["phases"]] == [None, 16, None]
    best = keras.models.load_model(run_folder / artifacts.MODEL)
    assert best.input.shape[1] == 32  # the checkpoint is the full-size model, whichever epoch won
    assert not list((run_folder / "model").glob("phase*_done.weights.h5"))
    rates = history["learning_rate"].to_numpy()
    assert rates[1] > rates[2] > rates[3] > rates[4] == 0  # one schedule across the switch, not a restart


class StrengthRecorder(keras.Model):
    """Records, for each training batch, the augmentation strength its images were drawn at (its one feature)."""

    def __init__(self):
        super().__init__()
        self.dense, self.seen = keras.layers.Dense(1), []

    def call(self, features):
        return self.dense(features)

    def train_step(self, data):
        self.seen.append(float(data[0][0, 0]))
        return {"strength": data[0][0, 0]}


@pytest.mark.parametrize("initial_epoch", [0, 3])
def test_plain_views_start_at_their_epoch_whatever_tf_data_prefetched(initial_epoch):
    strength = tf.Variable(1.0, trainable=False)
    batches = (tf.data.Dataset.range(8).batch(2)
               .map(lambda indices: (tf.fill((2, 1), strength.value()), tf.zeros((2, 1))))
               .prefetch(8))  # drawn ahead of training: a switch at epoch 2's start would come too late
    model = StrengthRecorder()
    model.compile(run_eagerly=True)
    validating = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: time.sleep(0.2))
    model.fit(batches, epochs=5, initial_epoch=initial_epoch, verbose=0,
              callbacks=[validating, training._PlainViewsFrom(first=2, steps=4, strength=strength)])
    expected = [1.0] * 8 + [0.0] * 12
    assert model.seen == expected[4 * initial_epoch:]  # resumed in the tail (epoch 3): plain from its first batch


def test_plain_views_switch_after_the_last_batch_before_their_epoch_for_iterators_that_prefetch_when_made():
    strength = tf.Variable(1.0, trainable=False)
    switch = training._PlainViewsFrom(first=2, steps=4, strength=strength)
    switch.on_epoch_begin(1)
    switch.on_train_batch_end(2)
    assert float(strength.numpy()) == 1.0
    switch.on_train_batch_end(3)  # epoch 2's iterator is made next, before validation and on_epoch_begin(2)
    assert float(strength.numpy()) == 0.0


def test_the_plan_puts_the_plain_views_into_the_last_epochs_of_augmented_fine_tuning():
    phases = training.plan(tiny_params(epochs=2, fine_tune_epochs=5, plain_epochs=2,
                                       augmentation={"rotation_range": 90, "horizontal_flip": True}))
    assert [phase.plain_from for phase in phases] == [None, 5]
    assert "from epoch 6 the right-angle views only" in phases[1].describe()
    assert training.plan(tiny_params(epochs=2, fine_tune_epochs=5, plain_epochs=2))[1].plain_from is None


def test_fine_tuning_draws_its_last_epochs_at_strength_0(run_folder, monkeypatch):
    seen = []

    class Recording(training._PlainViewsFrom):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append((self.epoch, float(self.strength.numpy())))
    monkeypatch.setattr(training, "_PlainViewsFrom", Recording)
    p = tiny_params(epochs=1, fine_tune_epochs=3, plain_epochs=1,
                    augmentation={"rotation_range": 90, "zoom_range": 0.1, "one_resampling": True})
    training.train(run_folder, p, strategy="default")
    assert sorted(set(seen)) == [(1, 1.0), (2, 1.0), (3, 0.0)]


def test_validation_at_full_size_scores_the_low_resolution_copy_with_the_full_size_model(run_folder):
    p = tiny_params(epochs=1)
    data = training.read_data(run_folder, 32)
    model = training.build(p, data.classes, tf.distribute.get_strategy())
    training.compile_model(model)
    small = models.at_image_size(model, 16)
    small.set_weights([weight * 0.5 for weight in model.get_weights()])
    validation = training.inputs.image_dataset(data.validation.paths, data.validation.labels, len(data.classes), 32, 8)
    callback = training._ValidateAtFullSize(model, validation)
    callback.set_model(small)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert weights_digest(model) == weights_digest(small)
    expected = model.evaluate(validation, verbose=0, return_dict=True)
    assert logs["val_loss"] == pytest.approx(expected["loss"]) and "val_balanced_accuracy" in logs


def test_plan_caches_a_single_phase_only_on_a_frozen_backbone_without_augmentation():
    frozen = training.plan(tiny_params(model={"trainable_layers": 0}, epochs=3))
    assert [(phase.name, phase.cached) for phase in frozen] == [("train", True)]
    augmented = training.plan(tiny_params(model={"trainable_layers": 0}, augmentation={"vertical_flip": True}))
    assert augmented[0].cached is False and augmented[0].augmented is True
    assert training.plan(tiny_params(fine_tune_epochs=2), multi_worker=True)[0].cached is False
    mixed = training.plan(tiny_params(model={"trainable_layers": 0}, mixup=0.2))
    assert mixed[0].cached is False and mixed[0].augmented is True  # MixUp blends images: no cached features
    with pytest.raises(TrainingError, match="feature_cache: on needs a phase on a frozen backbone"):
        training.plan(tiny_params(feature_cache="on"))


@pytest.mark.slow
def test_the_same_params_give_the_same_weights(make_run_folder):
    p = tiny_params(epochs=1, fine_tune_epochs=1, sampling="balanced", augmentation={"horizontal_flip": True})
    digests = [weights_digest(training.train(make_run_folder(f"run{index}"), p, strategy="default")[0])
               for index in range(2)]
    assert digests[0] == digests[1]
    other_seed = params.from_dict({**p.to_dict(), "seed": 7})
    assert weights_digest(training.train(make_run_folder("run2"), other_seed, strategy="default")[0]) != digests[0]


@pytest.mark.slow
def test_small_cnn_learns_the_synthetic_lesions_from_scratch(make_run_folder):
    run_dir = make_run_folder(per_class=20, fractions=(0.6, 0.4, 0.0))
    p = tiny_params(model={"alpha": 1.0}, epochs=8, learning_rate=0.003, monitor="val_balanced_accuracy")
    _, summary = training.train(run_dir, p, strategy="default")
    assert summary["best_value"] > 0.7  # chance is 1/3


def test_unknown_class_weight_or_monitor_fails_before_training(run_folder):
    with pytest.raises(TrainingError, match="unknown classes \\['bcc'\\]"):
        training.train(run_folder, tiny_params(epochs=1, class_weight={"bcc": 3}), strategy="default")
    with pytest.raises(TrainingError, match="train.monitor: unknown metric 'val_top3_accuracy'.*val_top2_accuracy"):
        training.train(run_folder, tiny_params(epochs=1, monitor="val_top3_accuracy"), strategy="default")
    assert not (run_folder / artifacts.HISTORY).exists()


def test_balanced_accuracy_metric_matches_scikit_learn():
    true = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 0])
    predicted = np.array([0, 0, 1, 2, 1, 1, 2, 0, 0, 0])
    metric = training.BalancedAccuracy(num_classes=4)  # class 3 never occurs: left out of the mean, as sklearn does
    for start in (0, 4, 7):  # in batches, as fit() feeds it
        stop = {0: 4, 4: 7, 7: 10}[start]
        metric.update_state(np.eye(4)[true[start:stop]], np.eye(4)[predicted[start:stop]] * 0.9 + 0.025)
    assert float(metric.result()) == pytest.approx(balanced_accuracy_score(true, predicted))
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_logit_adjusted_loss_is_the_cross_entropy_of_the_softmax_with_the_log_priors_added_to_its_logits():
    targets = np.eye(3, dtype="float32")[[0, 1, 2, 2]]
    logits = np.array([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [0.0, 0.0, 0.2], [1.0, -0.5, 0.4]], "float32")
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    offsets = training.logit_offsets(1.0, [0] * 6 + [1] * 3 + [2], 3, "shuffle")
    np.testing.assert_allclose(offsets, np.log([0.6, 0.3, 0.1]), rtol=1e-6)
    adjusted = keras.ops.convert_to_numpy(keras.ops.log_softmax(logits + np.float32(offsets)))
    expected = -np.mean(np.sum(targets * adjusted, axis=1))
    loss = training.LogitAdjustedCrossentropy(offsets)
    assert float(loss(targets, probabilities)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(targets, probabilities)) > float(keras.losses.CategoricalCrossentropy()(targets, probabilities)), \
        "the rare class's targets weigh more: its logit is lowered before the loss"
    balanced = training.LogitAdjustedCrossentropy(training.logit_offsets(1.0, [0] * 6 + [1] * 3 + [2], 3, "balanced"),
                                                  label_smoothing=0.1)
    assert float(balanced(targets, probabilities)) == pytest.approx(
        float(keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(targets, probabilities)), rel=1e-5), \
        "balanced batches have equal shares: nothing to adjust"
    prior = np.array([0.6, 0.3, 0.1])
    smoothed = training.LogitAdjustedCrossentropy(offsets, label_smoothing=0.1)
    assert float(smoothed(targets, probabilities)) == pytest.approx(
        -np.mean(np.sum((0.9 * targets + 0.1 * prior) * adjusted, axis=1)), rel=1e-5), \
        "smoothing spreads by the prior, an even floor in the plain scores"
    assert training.logit_offsets(0.0, [0, 1], 2, "shuffle") is None


@pytest.mark.slow
def test_fine_tuning_with_the_logit_adjustment_trains_on_the_adjusted_loss(run_folder):
    p = tiny_params(epochs=1, fine_tune_epochs=1, sampling="shuffle", logit_adjustment=1.0)
    model, _ = training.train(run_folder, p, strategy="default")
    assert isinstance(model.loss, training.LogitAdjustedCrossentropy)
    data = training.read_data(run_folder, p.data.image_size)
    shares = np.bincount(data.train.labels, minlength=len(data.classes)) / len(data.train.labels)
    np.testing.assert_allclose(model.loss.offsets, np.log(shares), rtol=1e-6)


def test_cosine_schedule_warms_up_then_decays_to_zero_over_the_phase():
    schedule = training.learning_rate_schedule("cosine", 0.01, epochs=5, warmup_epochs=1, steps_per_epoch=10)
    rates = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    assert rates[0] == pytest.approx(0.0) and rates[1] == pytest.approx(0.005) and rates[2] == pytest.approx(0.01)
    assert 0.0 < rates[3] < 0.01 and rates[4] == pytest.approx(0.0, abs=1e-9)
    assert training.learning_rate_schedule("constant", 0.01, 5, 1, 10) == 0.01


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_layer_rate_scales_set_each_variables_share_of_the_update(tmp_path, optimizer):
    """SGD's and Adam's updates are proportional to the rate: with the same start and batch, each scaled variable
    moves by exactly its share of what it moves without scales, and the saved model loads with a stock optimizer."""
    images, labels = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)), np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1]]
    start = models.build_model("small_cnn", 3, 32, alpha=0.25, dropout=0.0)
    scales = models.layer_rate_scales(start, 0.5)

    def step(rate_scales):
        model = keras.models.clone_model(start)
        model.set_weights(start.get_weights())
        training.compile_model(model, optimizer, 0.01, rate_scales=rate_scales)
        model.train_on_batch(images, labels)
        return model, {v.path: v.numpy() - w.numpy() for v, w in zip(model.trainable_variables,
                                                                     start.trainable_variables)}

    model, scaled = step(scales)
    _, plain = step(None)
    for path, moved in plain.items():
        np.testing.assert_allclose(scaled[path], moved * scales.get(path, 1.0), rtol=1e-4, atol=1e-7)
    assert scales["conv0/kernel"] == 0.5 ** 4 and np.abs(plain["conv0/kernel"]).max() > 0
    model.save(tmp_path / "scaled.keras")
    reloaded = keras.models.load_model(tmp_path / "scaled.keras")
    stock = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}[optimizer]
    assert type(reloaded.optimizer) is type(model.optimizer) is stock
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5)


def test_sgd_momentum_carries_the_previous_step_into_the_next():
    images, labels = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)), np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1]]
    start = models.build_model("small_cnn", 3, 32, alpha=0.25, dropout=0.0)

    def second_step(momentum):
        model = keras.models.clone_model(start)
        model.set_weights(start.get_weights())
        training.compile_model(model, "sgd", 0.01, momentum=momentum)
        model.train_on_batch(images, labels)
        before = model.get_layer("predictions").kernel.numpy()
        model.train_on_batch(images, labels)
        return np.abs(model.get_layer("predictions").kernel.numpy() - before).sum(), model.optimizer.momentum

    (plain, no_momentum), (carried, momentum) = second_step(0.0), second_step(0.9)
    assert (no_momentum, momentum) == (0.0, 0.9)
    assert carried > 1.5 * plain, "the second step adds 0.9 of the first to its own"
    with pytest.raises(ValueError, match="momentum is for sgd or rmsprop"):
        training.compile_model(keras.models.clone_model(start), "adamw", 0.01, momentum=0.9)


def test_mixed_precision_policy_survives_model_building(run_folder):
    p = tiny_params(epochs=1, mixed_precision="mixed_bfloat16")
    model = training.build(p, artifacts.class_names(run_folder), tf.distribute.get_strategy())
    try:
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        assert model.get_layer("backbone").get_layer("conv0").dtype_policy.name == "mixed_bfloat16"
        assert model.get_layer("predictions").dtype_policy.name == "float32"  # probabilities stay float32
        exported = models.as_float32(model)
        assert {layer.dtype_policy.name for layer in exported.get_layer("backbone").layers} == {"float32"}
        np.testing.assert_allclose(exported.predict(np.ones((2, 32, 32, 3)) * 100, verbose=0),
                                   model.predict(np.ones((2, 32, 32, 3)) * 100, verbose=0), atol=2e-2)
    finally:
        keras.config.set_dtype_policy("float32")


def test_pointwise_bfloat16_computes_only_the_plain_convolutions_in_bfloat16(run_folder, tmp_path):
    p = params.from_dict({"name": "tiny", "data": {"image_size": 32},
                          "model": {"backbone": "mobilenet", "alpha": 0.25, "weights": None},
                          "train": {"batch_size": 8, "mixed_precision": "mixed_bfloat16_pointwise"}})
    model = training.build(p, artifacts.class_names(run_folder), tf.distribute.get_strategy())
    assert keras.config.dtype_policy().name == "float32"

    def policies(built):
        backbone = built.get_layer("backbone").layers
        return {kind: {layer.dtype_policy.name for layer in backbone if type(layer) is kind}
                for kind in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.BatchNormalization)}

    assert policies(model) == {keras.layers.Conv2D: {"mixed_bfloat16"}, keras.layers.DepthwiseConv2D: {"float32"},
                               keras.layers.BatchNormalization: {"float32"}}
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    first_conv = next(layer for layer in model.get_layer("backbone").layers if type(layer) is keras.layers.Conv2D)
    assert first_conv(images).dtype == "bfloat16"  # computed so, not only labelled so
    training.compile_model(model, "adamw", 1e-3)
    model.train_on_batch(images, np.eye(3, dtype="float32")[[0, 1, 2, 0]])
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    assert policies(reloaded) == policies(model)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    exported = models.as_float32(model)
    np.testing.assert_allclose(exported.predict(images, verbose=0), model.predict(images, verbose=0), atol=2e-2)


def test_auto_precision_uses_bfloat16_on_a_cpu_only_where_it_was_measured_faster(monkeypatch):
    monkeypatch.setattr(training, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert training.resolve_precision("auto", "vgg19") == "mixed_bfloat16"
    assert training.resolve_precision("auto", "mobilenet") == "float32"
    monkeypatch.setattr(training, "cpu_flags", lambda: {"avx2"})
    assert training.resolve_precision("auto", "vgg19") == "float32"
    assert training.resolve_precision("off", "vgg19") == "float32"


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = models.build_model("small_cnn", num_classes=3, image_size=32, alpha=0.25)
    checkpoint = next(callback for callback in training.make_callbacks(tmp_path, "val_loss", "min")
                      if isinstance(callback, keras.callbacks.ModelCheckpoint))
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_loss": 1.0})
    best = tmp_path / artifacts.MODEL
    first = best.read_bytes()

    def full_disk(path, **options):
        Path(path).write_bytes(first[:100])  # the zip is cut short when the disk fills
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model, "save", full_disk)
    with pytest.raises(TrainingError, match="epoch 2 \\(No space left on device\\); the previous checkpoint .*best.keras"
                                            " is kept. Free disk space"):
        checkpoint.on_epoch_end(1, {"val_loss": 0.5})
    assert best.read_bytes() == first
    assert [path.name for path in best.parent.iterdir()] == ["best.keras"], "no partial file is left behind"
    keras.models.load_model(best)

    (best.parent / ".partial-best.keras").write_bytes(first[:100])  # a save killed mid-write, then a resume
    checkpoint.on_epoch_end(2, {"val_loss": 2.0})  # no improvement: nothing may be installed
    assert best.read_bytes() == first


@pytest.mark.slow
def test_feature_cache_training_matches_ordinary_training(run_folder, tmp_path):
    """Same seed, same initial head, same batch order: the head trained on cached features must follow
    the same trajectory as the full model with a frozen backbone. Dropout is 0 because its random
    masks come from different generators in the two models; everything else is deterministic."""
    keras.utils.set_random_seed(0)  # the backbone below must not depend on what ran before in this process
    pretrained = models.build_model("small_cnn", num_classes=3, image_size=32, alpha=0.5)
    training.compile_model(pretrained, learning_rate=0.001)
    manifest = artifacts.read_manifest(run_folder)
    from lib import inputs

    images = inputs.load_processed(manifest["abs_path"]).astype("float32")
    targets = keras.utils.to_categorical(manifest["label"].astype("category").cat.codes, 3)
    pretrained.fit(images, targets, epochs=3, batch_size=8, verbose=0)  # a backbone whose features differ
    weights = tmp_path / "backbone.weights.h5"
    pretrained.get_layer("backbone").save_weights(weights)

    results = {}
    for mode in ("off", "on"):
        run_dir = shutil.copytree(run_folder, tmp_path / mode)
        p = tiny_params(model={"weights": str(weights), "trainable_layers": 0, "head": "dense", "dense_units": [16]},
                        epochs=3, batch_size=4, learning_rate=0.01, feature_cache=mode)
        _, summary = training.train(run_dir, p, strategy="default")
        results[mode] = (summary, pd.read_csv(run_dir / artifacts.HISTORY),
                         keras.models.load_model(run_dir / artifacts.MODEL).predict(images, verbose=0))
    (plain, plain_history, plain_predictions), (cached, cached_history, cached_predictions) = results["off"], results["on"]
    assert plain["feature_cache"] is False and cached["feature_cache"] is True
    assert plain_history["loss"].iloc[-1] < plain_history["loss"].iloc[0] - 0.01  # the head did learn
    np.testing.assert_allclose(cached_history[["loss", "val_loss"]], plain_history[["loss", "val_loss"]], atol=1e-3)
    assert cached["best_epoch"] == plain["best_epoch"]
    np.testing.assert_allclose(cached_predictions, plain_predictions, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after, progressive", [(3, {}),  # in fine-tuning
                                                     # in the low-resolution phase, then after it
                                                     (3, {"low_resolution_epochs": 2, "low_resolution": 16}),
                                                     (4, {"low_resolution_epochs": 2, "low_resolution": 16})])
def test_killed_run_resumes_at_its_next_epoch_and_finishes_all_epochs(run_folder, kill_after, progressive):
    job = job_for(run_folder, epochs=2, fine_tune_epochs=3, **progressive)
    killed = run_script(job, env={"KILL_AFTER_EPOCH": str(kill_after)}, check=False)
    assert killed.returncode == -9
    assert list(pd.read_csv(run_folder / artifacts.HISTORY)["epoch"]) == list(range(kill_after))
    assert (run_folder / "model" / "backup" / "phase2").is_dir()

    resumed = run_script(job)
    assert f"Epoch {kill_after + 1}/" in resumed.stdout and f"Epoch {kill_after}/" not in resumed.stdout
    assert list(pd.read_csv(run_folder / artifacts.HISTORY)["epoch"]) == [0, 1, 2, 3, 4]
    summary = summary_from(resumed.stdout)
    assert summary["epochs_run"] == 5 and not list((run_folder / "model").glob("phase*_done.weights.h5"))


@pytest.mark.slow
@pytest.mark.parametrize("ema_momentum", [None, 0.99])  # the recommended recipe keeps the weights' moving average
def test_mirrored_strategy_trains_on_two_logical_cpus(run_folder, ema_momentum):
    job = job_for(run_folder, strategy="mirrored", epochs=1, batch_size=2, ema_momentum=ema_momentum)
    summary = summary_from(run_script(job, env={"LOGICAL_CPUS": "2"}).stdout)
    assert summary["replicas"] == 2 and "MirroredStrategy" in summary["device"]
    assert (run_folder / artifacts.MODEL).is_file()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_multi_worker_strategy_without_a_cluster_says_how_to_describe_one(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(TrainingError, match="multi_worker needs \\$TF_CONFIG on every worker"):
        training.make_strategy("multi_worker")


@pytest.mark.slow
def test_multi_worker_strategy_trains_with_two_local_workers_that_stay_in_sync(make_run_folder):
    """Two worker processes on 127.0.0.1 (TF_CONFIG) train one run: the gradients are all-reduced, so both
    end with identical weights; only the chief (worker 0) writes the run's products."""
    run_folder = make_run_folder(fractions=(0.5, 0.5, 0.0))  # a global batch of 8 in train and in validation
    job = job_for(run_folder, strategy="multi_worker", epochs=2, batch_size=4)
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    processes = [subprocess.Popen(
        [sys.executable, "-c", SCRIPT, json.dumps(job)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(paths.PROJECT_ROOT),
             "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})})
        for index in range(2)]
    try:
        outputs = [process.communicate(timeout=240) for process in processes]
    finally:
        for process in processes:
            process.kill()
    assert [process.returncode for process in processes] == [0, 0], outputs[0][1][-3000:] + outputs[1][1][-3000:]
    chief, other = (summary_from(stdout) for stdout, _ in outputs)
    assert chief["strategy"] == other["strategy"] == "multi_worker" and chief["replicas"] == 2
    assert chief["epochs_run"] == 2 and chief == json.loads((run_folder / artifacts.TRAINING).read_text())
    weights = [stdout.split("WEIGHTS ", 1)[1].split()[0] for stdout, _ in outputs]
    assert weights[0] == weights[1], "the workers' weights diverged: gradients were not all-reduced"
    assert keras.models.load_model(run_folder / artifacts.MODEL).output_shape == (None, 3)
    assert list(pd.read_csv(run_folder / artifacts.HISTORY)["epoch"]) == [0, 1]


def test_a_moving_average_of_the_weights_is_what_validation_sees_and_the_checkpoint_keeps(make_run_folder):
    """With a momentum near 1 the average barely leaves the initial weights: validation (which sees the average)
    stays where it started while the training loss falls; without it, validation moves with training."""
    def trained(ema_momentum):
        run_dir = make_run_folder(f"ema-{ema_momentum}")
        model, _ = training.train(run_dir, tiny_params(epochs=3, learning_rate=0.01, ema_momentum=ema_momentum),
                                  strategy="default")
        return model, pd.read_csv(run_dir / artifacts.HISTORY)

    averaged, averaged_history = trained(0.9999)
    plain, plain_history = trained(None)
    assert averaged.optimizer.use_ema and not plain.optimizer.use_ema
    assert averaged_history["loss"].iloc[-1] < averaged_history["loss"].iloc[0] - 0.05  # the weights did train
    assert np.ptp(averaged_history["val_loss"]) < 0.02 < np.ptp(plain_history["val_loss"])
