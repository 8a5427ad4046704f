"""metrics.json, predictions.csv, report.md with its model card, and the TensorBoard summary."""

import json

import numpy as np
import pandas as pd
import pytest

from lib import artifacts, evaluation, report

CLASSES = ["benign", "malignant"]
LABELS = ["benign", "benign", "malignant", "malignant"]
PROBABILITIES = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.65, 0.35]])
PARAMS = {"name": "isic_demo", "seed": 1, "data": {"source": "kaggle", "dataset": "isic_binary", "labels": "binary",
                                                     "image_size": 224, "limit": None},
          "model": {"backbone": "vgg19", "weights": "imagenet", "dense_units": [512, 512]},
          "train": {"epochs": 50, "reduce_lr": None}}


def split(prefix):
    rows = pd.DataFrame({"image_id": [f"{prefix}{index}" for index in range(4)], "label": LABELS,
                         "lesion_id": [f"{prefix}-lesion{index}" for index in range(4)]})
    return evaluation.SplitPredictions(rows, PROBABILITIES[:, None])


def summary():
    return evaluation.evaluate(split("t"), split("v"), CLASSES, train_labels=LABELS, n_resamples=100, seed=0)


def test_flatten_params_joins_nested_keys_with_dots():
    flat = report.flatten_params(PARAMS)

    assert flat["data.dataset"] == "isic_binary"
    assert flat["model.dense_units"] == [512, 512]
    assert flat["train.reduce_lr"] is None and flat["name"] == "isic_demo"


def test_metrics_json_round_trips_with_the_stable_keys(tmp_path):
    path = artifacts.write_json(tmp_path / "metrics.json", summary())

    written = json.loads(path.read_text())
    assert {"n_test", "accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "per_class",
            "baselines", "melanoma", "calibration", "classes", "test_set", "bootstrap", "temperature",
            "operating_point", "ood", "tta", "validation"} <= set(written)
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
    metrics = summary()
    text = report.render_report(PARAMS, metrics, CLASSES, report.counts_table(COUNTS),
                                ["plots/roc.png", "plots/confusion_matrix.png"], training={"best_epoch": 3})

    # model on test, its interval, on validation, then the majority baseline
    assert "| metric | model (test) | 95% interval | model (validation) | majority baseline |" in text
    assert "| balanced accuracy (mean recall) | 0.750 | " in text and " | 0.750 | 0.500 | 0.500 |" in text
    assert "fingerprint `" in text and "Temperature scaling fitted on 4 validation images" in text
    temperature = metrics["temperature"]
    assert (f"| test | {temperature['test_ece_before']:.3f} | {temperature['test_ece_after']:.3f} | "
            f"{temperature['test_nll_before']:.3f} | {temperature['test_nll_after']:.3f} |") in text
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

    assert "## External dataset" in text and "4 images scored, 2 unusable" in text
    assert "| metric | model (external) |" in text
    assert "Also measured on one external dataset (`isic_binary`" in text


def test_tta_section_gives_the_spread_of_one_view_over_the_orientations():
    tta = {"mode": "auto", "chosen": "dihedral", "views": 8,
           "validation_balanced_accuracy": {"off": 0.76, "flips": 0.73, "dihedral": 0.75},
           "orientations": {"validation": [0.76, 0.70, 0.68, 0.72, 0.71, 0.73, 0.70, 0.74], "test": None}}

    text = "\n".join(report.tta_lines({"tta": tta}))

    assert ("off 0.760, flips 0.730, dihedral 0.750; the model above, and the web page, average the 8 views of "
            "`dihedral`, and one view is reported beside it.") in text
    assert "each of the 8 orientations predicted, balanced accuracy: validation 0.680-0.760 (mean 0.718, as " \
           "stored 0.760)." in text and "; test" not in text
    assert "orientations" not in "\n".join(report.tta_lines({"tta": {**tta, "orientations": {"validation": None}}}))


def test_tta_section_gives_the_held_out_scores_auto_chose_on_when_class_biases_apply():
    tta = {"mode": "auto", "chosen": "dihedral_45", "views": 16,
           "validation_balanced_accuracy": {"off": 0.74, "dihedral": 0.75, "dihedral_45": 0.72},
           "held_out_balanced_accuracy": {"off": 0.73, "dihedral": 0.75, "dihedral_45": 0.76}, "orientations": {}}

    text = "\n".join(report.tta_lines({"tta": tta}))

    assert ("on held-out validation images (one view: the mean over its orientations; `auto` chooses on these): off "
            "0.730, dihedral 0.750, dihedral_45 0.760; the model above, and the web page, average the 16 views of "
            "`dihedral_45`") in text


def test_calibration_section_says_whether_the_class_biases_apply_and_why():
    block = {"mode": "auto", "applied": True, "bias": {"benign": -0.25, "malignant": 0.25},
             "weights": {"benign": 0.6, "malignant": 3.0},
             "cross_validation": {"folds": 2, "repeats": 10, "without": 0.71, "with": 0.74}}
    metrics = summary()

    text = "\n".join(report.calibration_lines({**metrics, "temperature": {**metrics["temperature"],
                                                                        "class_bias": block}}))

    assert "Class biases (`evaluate.class_bias: auto`)" in text and "applied: every prediction" in text
    assert "0.710 without, 0.740 with" in text and "benign -0.25, malignant +0.25" in text
    refused = {**block, "applied": False, "cross_validation": {**block["cross_validation"], "with": 0.70}}
    assert "not applied" in "\n".join(report.class_bias_lines(refused))
    assert "Class biases" not in "\n".join(report.calibration_lines(metrics))  # class_bias: off


def test_metrics_table_gives_one_view_beside_a_model_that_averages_views():
    metrics = summary()
    one_view = {**metrics, "tta": {**metrics["tta"], "one_view": {**metrics, "balanced_accuracy": 0.123}}}

    table = report.metrics_table(one_view)

    assert "| model (test) | 95% interval | model (validation) | model, one view (test) |" in table
    assert "0.123" in table and "one view" not in report.metrics_table(metrics)


def test_model_card_warns_when_the_test_split_chose_the_checkpoint():
    params = {**PARAMS, "data": {**PARAMS["data"], "test_as_validation": True}}

    text = report.render_report(params, summary(), CLASSES, report.counts_table(COUNTS), [])

    assert "test numbers are optimistic" in text and "but used to choose the checkpoint" in text


def summary_events(log_dir):
    """{tag: [summary values]} of the evaluation's event file in `log_dir`, read back with TensorFlow."""
    import tensorflow as tf

    (path,) = log_dir.glob(f"events.out.tfevents.*{report.HPARAMS_FILE_SUFFIX}")
    values = {}
    for event in tf.compat.v1.train.summary_iterator(str(path)):
        for value in event.summary.value:
            values.setdefault(value.tag, []).append(value)
    return values


def hparams_data(values, tag):
    from tensorboard.plugins.hparams import plugin_data_pb2

    return plugin_data_pb2.HParamsPluginData.FromString(values[tag][0].metadata.plugin_data.content)


TRAINING = {"best_epoch": 3, "best_validation_metrics": {"loss": 0.4, "accuracy": 0.8, "balanced_accuracy": 0.7}}


def test_tensorboard_hparams_have_typed_domains_read_from_the_params_schema(tmp_path):
    from tensorboard.plugins.hparams import api_pb2

    report.write_tensorboard(tmp_path / "logs", "isic_demo", PARAMS, summary(), TRAINING)

    experiment = hparams_data(summary_events(tmp_path / "logs"), "_hparams_/experiment").experiment
    infos = {info.name: info for info in experiment.hparam_infos}
    assert set(infos) == set(report.HPARAMS)
    backbone = infos["model.backbone"]
    assert backbone.type == api_pb2.DATA_TYPE_STRING
    assert {"mobilenet", "vgg19", "small_cnn"} <= {value.string_value for value in backbone.domain_discrete.values}
    assert {value.string_value for value in infos["train.class_weight"].domain_discrete.values} == {
        "none", "balanced", "per-class"}
    rate = infos["train.learning_rate"]
    assert rate.type == api_pb2.DATA_TYPE_FLOAT64 and rate.WhichOneof("domain") == "domain_interval"
    assert (rate.domain_interval.min_value, rate.domain_interval.max_value) == (0.0, 10.0)
    size = infos["data.image_size"].domain_interval
    assert (size.min_value, size.max_value) == (32, 1024)
    switch = infos["model.batch_norm_affine"]
    assert switch.type == api_pb2.DATA_TYPE_BOOL
    assert {value.bool_value for value in switch.domain_discrete.values} == {False, True}
    for info in infos.values():
        assert info.WhichOneof("domain") in ("domain_discrete", "domain_interval"), info.name


def test_tensorboard_session_holds_the_run_its_metrics_and_ends_with_success(tmp_path):
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.util import tensor_util

    metrics = summary()
    written = report.write_tensorboard(tmp_path / "logs", "isic_demo", PARAMS, metrics, TRAINING,
                                       figures=[write_png(tmp_path / "confusion_matrix.png")], report_text="# report")

    values = summary_events(tmp_path / "logs")
    start = hparams_data(values, "_hparams_/session_start_info").session_start_info
    assert start.group_name == "isic_demo" and start.hparams["model.backbone"].string_value == "vgg19"
    assert start.hparams["data.image_size"].number_value == 224
    assert start.hparams["train.class_weight"].string_value == "none"
    assert hparams_data(values, "_hparams_/session_end_info").session_end_info.status == api_pb2.STATUS_SUCCESS
    assert "best_validation_balanced_accuracy" in written and "best_validation_auc" not in written
    assert "test_screening_sensitivity" in written and "test_top3_accuracy" not in written
    assert float(tensor_util.make_ndarray(values["test_balanced_accuracy"][0].tensor)) == pytest.approx(
        metrics["balanced_accuracy"])
    assert float(tensor_util.make_ndarray(values["best_validation_balanced_accuracy"][0].tensor)) == pytest.approx(0.7)
    assert "confusion_matrix" in values and "report" in values


def write_png(path):
    from PIL import Image

    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    return path


def test_rerun_replaces_the_tensorboard_summary_and_keeps_other_logs(tmp_path):
    (tmp_path / "logs" / "validation").mkdir(parents=True)
    (tmp_path / "logs" / "validation" / "events.out.tfevents.1.host.v2").write_bytes(b"training")
    (tmp_path / "logs" / "events.out.tfevents.1.host.v2").write_bytes(b"someone else's")

    report.write_tensorboard(tmp_path / "logs", "isic_demo", {"seed": 1}, summary())
    report.write_tensorboard(tmp_path / "logs", "isic_demo", {"seed": 2}, summary())

    assert len(list((tmp_path / "logs").glob("events.out.tfevents.*.hparams.v2"))) == 1
    assert (tmp_path / "logs" / "validation" / "events.out.tfevents.1.host.v2").read_bytes() == b"training"
    assert (tmp_path / "logs" / "events.out.tfevents.1.host.v2").read_bytes() == b"someone else's"
