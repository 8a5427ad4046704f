"""metrics.json, predictions.csv, report.md with its model card, and the TensorBoard HParams summary."""

import json

import numpy as np
import pandas as pd
import pytest

from lib import evaluation, report

CLASSES = ["benign", "malignant"]
LABELS = ["benign", "benign", "malignant", "malignant"]
PROBABILITIES = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.65, 0.35]])
PARAMS = {"name": "isic_demo", "seed": 1, "data": {"source": "kaggle", "dataset": "isic_binary", "labels": "binary",
                                                     "image_size": 224, "limit": None},
          "model": {"backbone": "vgg19", "weights": "imagenet", "dense_units": [512, 512]},
          "train": {"epochs": 50, "reduce_lr": None}}


def summary():
    return evaluation.summarize(LABELS, PROBABILITIES, CLASSES, train_labels=LABELS, seed=0)


def test_flatten_params_joins_nested_keys_with_dots():
    flat = report.flatten_params(PARAMS)

    assert flat["data.dataset"] == "isic_binary"
    assert flat["model.dense_units"] == [512, 512]
    assert flat["train.reduce_lr"] is None and flat["name"] == "isic_demo"


def test_metrics_json_round_trips_with_the_stable_keys(tmp_path):
    path = report.write_json(summary(), tmp_path / "metrics.json")

    written = json.loads(path.read_text())
    assert {"n_test", "accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "per_class",
            "baselines", "melanoma", "calibration", "classes"} <= set(written)
    assert set(written["per_class"]["malignant"]) == {"precision", "recall", "f1", "support"}
    assert set(written["baselines"]["majority"]) >= {"accuracy", "balanced_accuracy"}


def test_predictions_csv_has_one_probability_column_per_class(tmp_path):
    table = evaluation.predictions_table(["i1", "i2", "i3", "i4"], LABELS, PROBABILITIES, CLASSES)

    written = pd.read_csv(report.write_predictions(table, tmp_path / "predictions.csv"))

    assert list(written["predicted"]) == ["benign", "benign", "malignant", "benign"]
    assert written[["prob_benign", "prob_malignant"]].to_numpy() == pytest.approx(PROBABILITIES)


COUNTS = {"per_class": {"benign": {"found": 5, "used": 4, "skipped": 1, "train": 2, "test": 2},
                        "malignant": {"found": 4, "used": 4, "skipped": 0, "train": 2, "test": 2}},
          "total": {"found": 9, "used": 8, "skipped": 1, "train": 4, "test": 4}}


def test_report_has_metrics_beside_baselines_plots_and_a_model_card():
    text = report.render_report(PARAMS, summary(), CLASSES, report.counts_table(COUNTS),
                                ["plots/roc.png", "plots/confusion_matrix.png"], training={"best_epoch": 3})

    assert "| balanced accuracy (mean recall) | 0.750 | 0.500 |" in text  # model, then majority baseline
    assert "[roc](plots/roc.png)" in text
    assert "not diagnosis" in text.lower() or "not a medical device" in text.lower()
    assert "copies of HAM10000" in text  # recipe B's data-source shortcut
    assert "| data.dataset | `isic_binary` |" in text
    assert "| benign | 5 | 4 | 1 | 2 | 2 |" in text and "| total | 9 | 8 | 1 | 4 | 4 |" in text
    assert "External dataset" not in text


def test_report_shows_external_dataset_results_when_evaluated():
    metrics = {**summary(), "external": {"source": "local", "dataset": "isic_binary", "n_skipped": 2,
                                         "n_unknown_label": 0, **evaluation.compute_metrics(LABELS, PROBABILITIES,
                                                                                            CLASSES)}}

    text = report.render_report(PARAMS, metrics, CLASSES, report.counts_table(COUNTS), [])

    assert "## External dataset" in text and "4 images scored, 2 unreadable" in text
    assert "Also measured on one external dataset (`isic_binary`" in text


def test_model_card_warns_when_the_test_split_chose_the_checkpoint():
    params = {**PARAMS, "data": {**PARAMS["data"], "test_as_validation": True}}

    text = report.render_report(params, summary(), CLASSES, report.counts_table(COUNTS), [])

    assert "test numbers are optimistic" in text and "but used to choose the checkpoint" in text


def test_hparams_summary_records_params_and_test_metrics(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    written = report.write_hparams(tmp_path / "logs", "isic_demo", report.flatten_params(PARAMS), summary())

    assert "test_balanced_accuracy" in written and "test_top3_accuracy" not in written
    events = event_accumulator.EventAccumulator(str(tmp_path / "logs"))
    events.Reload()
    hparams_tags = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams_tags)
    assert b"isic_demo" in hparams_tags["_hparams_/session_start_info"]
    assert b"epoch_accuracy" in hparams_tags["_hparams_/experiment"]
    accuracy = tensor_util.make_ndarray(events.Tensors("test_accuracy")[0].tensor_proto)
    assert float(accuracy) == summary()["accuracy"]


def test_rerun_replaces_the_hparams_summary_and_keeps_other_logs(tmp_path):
    (tmp_path / "logs" / "validation").mkdir(parents=True)
    (tmp_path / "logs" / "validation" / "events.out.tfevents.1.host.v2").write_bytes(b"training")
    (tmp_path / "logs" / "events.out.tfevents.1.host.v2").write_bytes(b"someone else's")

    report.write_hparams(tmp_path / "logs", "isic_demo", {"seed": 1}, summary())
    report.write_hparams(tmp_path / "logs", "isic_demo", {"seed": 2}, summary())

    assert len(list((tmp_path / "logs").glob("events.out.tfevents.*.hparams.v2"))) == 1
    assert (tmp_path / "logs" / "validation" / "events.out.tfevents.1.host.v2").read_bytes() == b"training"
    assert (tmp_path / "logs" / "events.out.tfevents.1.host.v2").read_bytes() == b"someone else's"
