"""The run comparison table over fake run folders."""

import json

import pandas as pd
import yaml

from lib import compare


def make_run(outputs_dir, name, backbone, learning_rate, metrics=None, params_file=None):
    run_dir = outputs_dir / name
    run_dir.mkdir(parents=True)
    params = {"name": name, "seed": 42, "data": {"dataset": "ham10000", "labels": "dx", "image_size": 64},
              "model": {"backbone": backbone, "dense_units": []},
              "train": {"epochs": 2, "learning_rate": learning_rate, "batch_size": 32}}
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params))
    if params_file:
        (run_dir / "provenance.json").write_text(json.dumps({"params_file": params_file}))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


METRICS = {"n_test": 60, "accuracy": 0.8, "balanced_accuracy": 0.6, "macro_f1": 0.55, "roc_auc": 0.9,
           "top3_accuracy": 0.95, "melanoma": {"class": "mel", "sensitivity": 0.5, "specificity": 0.9},
           "baselines": {"majority": {"accuracy": 0.67, "balanced_accuracy": 1 / 7}},
           "calibration": {"ece": 0.08}}


def test_compare_lists_each_run_with_differing_params_and_metrics(tmp_path):
    make_run(tmp_path, "demo", "small_cnn", 0.002, metrics=METRICS, params_file="params/demo.yaml")
    make_run(tmp_path, "mobilenet", "mobilenet", 0.01)
    (tmp_path / "not_a_run").mkdir()

    table = compare.compare_runs(tmp_path)

    assert list(table["run"]) == ["demo", "mobilenet"]
    assert list(table["status"]) == ["complete", "incomplete"]
    assert list(table["recipe"]) == ["demo.yaml", "mobilenet"]
    assert list(table["train.learning_rate"]) == [0.002, 0.01]
    assert "train.batch_size" not in table.columns  # the same in every run
    assert "model.backbone" in table.columns  # a key parameter, always shown
    assert table.loc[0, "balanced_accuracy"] == 0.6 and table.loc[0, "melanoma_sensitivity"] == 0.5
    assert pd.isna(table.loc[1, "balanced_accuracy"])


def test_comparison_is_written_as_csv_and_markdown(tmp_path):
    make_run(tmp_path / "outputs", "demo", "small_cnn", 0.002, metrics=METRICS)
    make_run(tmp_path / "outputs", "other", "small_cnn", 0.001, metrics=METRICS)

    csv_path, markdown_path = compare.write_comparison(compare.compare_runs(tmp_path / "outputs"), tmp_path)

    assert list(pd.read_csv(csv_path)["run"]) == ["demo", "other"]
    markdown = markdown_path.read_text()
    assert "| run | name | recipe | status |" in markdown and "| other |" in markdown


def test_main_prints_the_table_and_writes_it_beside_the_runs(tmp_path, capsys):
    make_run(tmp_path, "demo", "small_cnn", 0.002, metrics=METRICS)

    assert compare.main([str(tmp_path)]) == 0

    assert "demo" in capsys.readouterr().out
    assert (tmp_path / "comparison.csv").is_file() and (tmp_path / "comparison.md").is_file()


def test_empty_outputs_folder_gives_an_empty_table(tmp_path):
    assert compare.compare_runs(tmp_path).empty


def test_main_reports_a_missing_outputs_folder_without_a_traceback(tmp_path, capsys):
    assert compare.main([str(tmp_path / "missing")]) == 1

    assert "outputs folder not found" in capsys.readouterr().err
