"""Specification of lib.training: what a run folder holds after training, resuming after a kill,
feature-cache training equal to ordinary training, and the distribution strategies.

Models and data are tiny (small_cnn at 32 px, tens of generated images); strategies and the resume
test run in subprocesses because TensorFlow fixes its devices and cluster at start-up.
"""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from lib import models, paths, training
from lib.errors import TrainingError
from tests.test_inputs import write_run

SMALL = {"backbone": "small_cnn", "weights": None, "alpha": 0.5, "dropout": 0.0}

# A training run in a fresh interpreter: argv[1] is a JSON {"run_dir", "model_options", "train"}.
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
    from lib import training

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == int(os.environ.get("KILL_AFTER_EPOCH", 0)):
                os.kill(os.getpid(), signal.SIGKILL)

    job = json.loads(sys.argv[1])
    strategy = training.make_strategy(job["train"].pop("strategy", "default"))
    model, summary = training.train(job["run_dir"], job["model_options"], strategy=strategy,
                                    extra_callbacks=[Kill()], **job["train"])
    print("SUMMARY", json.dumps(summary))
    print("WEIGHTS", hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest())
""")


def run_script(job, env=None, check=True):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(paths.PROJECT_ROOT), **(env or {})}
    process = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(job)], env=environment,
                             capture_output=True, text=True, timeout=300)
    if check and process.returncode != 0:
        raise AssertionError(f"training subprocess failed ({process.returncode}):\n{process.stderr[-3000:]}")
    return process


def summary_of(process):
    return summary_from(process.stdout)


def summary_from(stdout):
    return json.loads(stdout.split("SUMMARY ", 1)[1].splitlines()[0])


def scalar_tags(event_dir):
    tags = set()
    for path in event_dir.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_training_writes_checkpoint_history_tensorboard_and_summary(tmp_path):
    run_dir = write_run(tmp_path, per_class=6)
    model, summary = training.train(
        run_dir, SMALL, image_size=32, epochs=2, fine_tune_epochs=1, fine_tune_learning_rate=1e-4,
        batch_size=8, augmentation={"horizontal_flip": True, "rotation_range": 20},
        reduce_lr={"monitor": "val_loss", "patience": 1}, early_stopping={"monitor": "val_loss", "patience": 5},
        class_weight="balanced", monitor="val_accuracy", strategy="default")
    history = pd.read_csv(run_dir / "model" / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2]  # 2 head epochs, then 1 fine-tuning epoch
    assert {"loss", "val_loss", "accuracy", "top2_accuracy", "auc", "val_auc"} <= set(history.columns)
    saved = json.loads((run_dir / "training.json").read_text())
    assert saved == summary
    assert saved["epochs_run"] == 3 and saved["monitor"] == "val_accuracy" and saved["monitor_mode"] == "max"
    assert saved["best_value"] == history["val_accuracy"].max()
    assert saved["feature_cache"] is False and "CPU" in saved["device"]
    best = keras.models.load_model(run_dir / "model" / "best.keras")
    assert best.predict(np.zeros((1, 32, 32, 3), "float32"), verbose=0).shape == (1, 3)
    assert not (run_dir / "model" / "backup").exists()  # removed once training finished
    assert {"epoch_loss", "epoch_learning_rate", "augmented_training_images"} <= scalar_tags(run_dir / "logs" / "train")
    assert "epoch_loss" in scalar_tags(run_dir / "logs" / "validation")


def test_small_cnn_learns_the_generated_shapes_from_scratch(tmp_path):
    run_dir = write_run(tmp_path, per_class=20, size=32)
    _, summary = training.train(run_dir, {**SMALL, "alpha": 1.0}, image_size=32, epochs=8, batch_size=8,
                                learning_rate=0.003, monitor="val_accuracy", strategy="default")
    assert summary["best_value"] > 0.6  # chance is 1/3


def test_unknown_class_weight_or_monitor_fails_before_training(tmp_path):
    run_dir = write_run(tmp_path, per_class=3)
    with pytest.raises(TrainingError, match="unknown classes \\['mel'\\]"):
        training.train(run_dir, SMALL, image_size=32, epochs=1, class_weight={"mel": 3}, strategy="default")
    with pytest.raises(TrainingError, match="unknown metric 'val_top3_accuracy'.*val_top2_accuracy"):
        training.train(run_dir, SMALL, image_size=32, epochs=1, monitor="val_top3_accuracy", strategy="default")
    assert not (run_dir / "model" / "history.csv").exists()


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = models.build_model("small_cnn", num_classes=3, image_size=32, alpha=0.25)
    checkpoint = next(callback for callback in training.make_callbacks(tmp_path, "val_loss", "min")
                      if isinstance(callback, keras.callbacks.ModelCheckpoint))
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_loss": 1.0})
    best = tmp_path / "model" / "best.keras"
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


def test_feature_cache_training_matches_ordinary_training(tmp_path):
    """Same seed, same initial head, same batch order: the head trained on cached features must follow
    the same trajectory as the full model with a frozen backbone. Dropout is 0 because its random
    masks come from different generators in the two models; everything else is deterministic."""
    source = write_run(tmp_path / "source", per_class=10)
    keras.utils.set_random_seed(0)  # the backbone below must not depend on what ran before in this process
    pretrained = models.build_model("small_cnn", num_classes=3, image_size=32, alpha=0.5)
    training.compile_model(pretrained, learning_rate=0.001)
    manifest = pd.read_csv(source / "data" / "manifest.csv")
    images = np.stack([keras.utils.img_to_array(keras.utils.load_img(source / path)) for path in manifest["path"]])
    targets = keras.utils.to_categorical(manifest["label"].astype("category").cat.codes, 3)
    pretrained.fit(images, targets, epochs=3, batch_size=8, verbose=0)  # a backbone whose features differ
    weights = tmp_path / "backbone.weights.h5"
    pretrained.get_layer("backbone").save_weights(weights)

    options = {**SMALL, "weights": str(weights), "trainable_layers": 0, "head": "dense", "dense_units": [16]}
    results = {}
    for mode in ("off", "on"):
        run_dir = shutil.copytree(source, tmp_path / mode)
        _, summary = training.train(run_dir, options, image_size=32, epochs=3, batch_size=4,
                                    learning_rate=0.01, feature_cache=mode, strategy="default")
        results[mode] = (summary, pd.read_csv(run_dir / "model" / "history.csv"),
                         keras.models.load_model(run_dir / "model" / "best.keras").predict(images, verbose=0))
    (plain, plain_history, plain_predictions), (cached, cached_history, cached_predictions) = results["off"], results["on"]
    assert plain["feature_cache"] is False and cached["feature_cache"] is True
    assert list((tmp_path / "on" / "features").glob("*/train.npy"))
    assert plain_history["loss"].iloc[-1] < plain_history["loss"].iloc[0] - 0.01  # the head did learn
    np.testing.assert_allclose(cached_history[["loss", "val_loss"]], plain_history[["loss", "val_loss"]], atol=1e-3)
    assert cached["best_epoch"] == plain["best_epoch"]
    np.testing.assert_allclose(cached_predictions, plain_predictions, atol=1e-3)


def test_killed_run_resumes_at_its_next_epoch_and_finishes_all_epochs(tmp_path):
    run_dir = write_run(tmp_path, per_class=4)
    job = {"run_dir": str(run_dir), "model_options": SMALL,
           "train": {"image_size": 32, "epochs": 4, "batch_size": 8, "seed": 1}}
    killed = run_script(job, env={"KILL_AFTER_EPOCH": "2"}, check=False)
    assert killed.returncode == -9
    assert list(pd.read_csv(run_dir / "model" / "history.csv")["epoch"]) == [0, 1]
    assert (run_dir / "model" / "backup").is_dir()

    resumed = run_script(job)
    assert "Epoch 3/4" in resumed.stdout and "Epoch 1/4" not in resumed.stdout
    assert list(pd.read_csv(run_dir / "model" / "history.csv")["epoch"]) == [0, 1, 2, 3]
    assert summary_of(resumed)["epochs_run"] == 4


def test_mirrored_strategy_trains_on_two_logical_cpus(tmp_path):
    run_dir = write_run(tmp_path, per_class=6)
    job = {"run_dir": str(run_dir), "model_options": SMALL,
           "train": {"image_size": 32, "epochs": 1, "batch_size": 2, "strategy": "mirrored"}}
    summary = summary_of(run_script(job, env={"LOGICAL_CPUS": "2"}))
    assert summary["replicas"] == 2 and "MirroredStrategy" in summary["device"]
    assert (run_dir / "model" / "best.keras").is_file()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_multi_worker_strategy_without_a_cluster_says_how_to_describe_one(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(TrainingError, match="multi_worker needs \\$TF_CONFIG on every worker"):
        training.make_strategy("multi_worker")


def test_multi_worker_strategy_trains_with_two_local_workers_that_stay_in_sync(tmp_path):
    """Two worker processes on 127.0.0.1 (TF_CONFIG) train one run: the gradients are all-reduced, so both
    end with identical weights; only the chief (worker 0) writes the run's products."""
    run_dir = write_run(tmp_path, per_class=8)
    job = {"run_dir": str(run_dir), "model_options": SMALL,
           "train": {"image_size": 32, "epochs": 2, "batch_size": 4, "strategy": "multi_worker"}}
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
    assert chief["epochs_run"] == 2 and chief == json.loads((run_dir / "training.json").read_text())
    weights = [stdout.split("WEIGHTS ", 1)[1].split()[0] for stdout, _ in outputs]
    assert weights[0] == weights[1], "the workers' weights diverged: gradients were not all-reduced"
    assert keras.models.load_model(run_dir / "model" / "best.keras").output_shape == (None, 3)
    assert list(pd.read_csv(run_dir / "model" / "history.csv")["epoch"]) == [0, 1]
