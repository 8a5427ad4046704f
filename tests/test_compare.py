"""The run comparison table, its warnings and the seed sweeps' aggregates, over fake run folders."""

import json

import pandas as pd
import pytest
import yaml

from lib import artifacts, compare


def make_run(outputs_dir, name, backbone, learning_rate, metrics=None, params_file=None, stale=None):
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
        artifacts.start_step(run_dir, "04_evaluate")
        artifacts.finish_step(run_dir, "04_evaluate")
    if stale:
        artifacts.start_step(run_dir, stale)  # an earlier step runs again: the metrics describe an older model
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


def with_test_set(metrics, sha256, **changes):
    return {**metrics, "test_set": {"sha256": sha256, "n": 60}, **changes}


def test_stale_runs_are_marked_and_named_in_a_warning(tmp_path):
    make_run(tmp_path, "fresh", "small_cnn", 0.002, metrics=METRICS)
    make_run(tmp_path, "retrained", "small_cnn", 0.001, metrics=METRICS, stale="03_train")

    table = compare.compare_runs(tmp_path)

    assert list(table["status"]) == ["complete", "stale"]
    (warning,) = compare.comparison_warnings(table)
    assert warning.startswith("retrained is stale") and "03_train ran again" in warning and "04_evaluate" in warning


def test_runs_are_grouped_by_test_set_and_those_tested_on_other_images_marked(tmp_path):
    make_run(tmp_path, "a", "small_cnn", 0.001, metrics=with_test_set(METRICS, "f" * 64))
    make_run(tmp_path, "b", "small_cnn", 0.002, metrics=with_test_set(METRICS, "0" * 64))
    make_run(tmp_path, "c", "small_cnn", 0.003, metrics=with_test_set(METRICS, "0" * 64))
    make_run(tmp_path, "d", "small_cnn", 0.004)

    table = compare.compare_runs(tmp_path)

    assert list(table["run"]) == ["b", "c", "a", "d"]  # the larger group first
    assert list(table["test_set"])[:3] == ["00000000", "00000000", "ffffffff"]
    assert list(table["different_test_set"]) == [False, False, True, False]
    assert any("a (ffffffff)" in message and "do not compare" in message
               for message in compare.comparison_warnings(table))


def test_intervals_and_the_screening_operating_point_are_columns(tmp_path):
    metrics = {**METRICS, "bootstrap": {"intervals": {"balanced_accuracy": [0.55, 0.651], "roc_auc": None}},
               "operating_point": {"test": {"sensitivity": {"value": 0.86, "ci": [0.7, 0.95]},
                                            "specificity": {"value": 0.6, "ci": [0.5, 0.7]}}},
               "validation": {"balanced_accuracy": 0.66}, "temperature": {"value": 1.4, "class_bias": {"applied": True}},
               "tta": {"chosen": "flips"}}
    make_run(tmp_path, "demo", "small_cnn", 0.002, metrics=metrics)

    row = compare.compare_runs(tmp_path).iloc[0]

    assert row["balanced_accuracy_ci"] == "0.55-0.65" and row["roc_auc_ci"] is None
    assert row["screening_sensitivity"] == 0.86 and row["val_balanced_accuracy"] == 0.66
    assert row["temperature"] == 1.4 and row["tta"] == "flips" and row["class_bias"].item() is True


def test_sweep_aggregate_is_the_mean_and_sample_deviation_of_its_complete_runs(tmp_path):
    make_run(tmp_path, "s-seed1", "small_cnn", 0.002, metrics=with_test_set(METRICS, "a" * 64, balanced_accuracy=0.6))
    make_run(tmp_path, "s-seed2", "small_cnn", 0.002, metrics=with_test_set(METRICS, "a" * 64, balanced_accuracy=0.8))
    make_run(tmp_path, "s-seed3", "small_cnn", 0.002, metrics=with_test_set(METRICS, "a" * 64, balanced_accuracy=0.1),
             stale="02_preprocess")

    aggregate = compare.aggregate_runs(tmp_path, ["s-seed1", "s-seed2", "s-seed3", "s-seed4"])

    assert [run["status"] for run in aggregate["runs"]] == ["complete", "complete", "stale", "missing"]
    assert aggregate["n_complete"] == 2 and aggregate["test_set"] == "a" * 64 and aggregate["same_test_set"]
    balanced = aggregate["metrics"]["balanced_accuracy"]
    assert balanced["mean"] == pytest.approx(0.7) and balanced["std"] == pytest.approx(0.1414, abs=1e-4)
    assert balanced["n"] == 2


def test_compare_shows_each_sweep_beside_the_runs(tmp_path, capsys):
    make_run(tmp_path, "s-seed1", "small_cnn", 0.002, metrics=with_test_set(METRICS, "a" * 64, balanced_accuracy=0.6))
    make_run(tmp_path, "s-seed2", "small_cnn", 0.002, metrics=with_test_set(METRICS, "b" * 64, balanced_accuracy=0.8))
    artifacts.write_json(tmp_path / "s-sweep.json", {"name": "s", "seeds": [1, 2], "runs": ["s-seed1", "s-seed2"]})

    sweeps = compare.compare_sweeps(tmp_path)
    assert compare.main([str(tmp_path)]) == 0

    row = sweeps.iloc[0]
    assert row["sweep"] == "s" and row["complete"] == "2/2" and row["test_set"] == "different"
    assert row["balanced_accuracy_mean"] == pytest.approx(0.7)
    printed = capsys.readouterr().out
    assert "Seed sweeps" in printed and "0.700 ± 0.141" in printed
    assert (tmp_path / "sweeps.csv").is_file() and "## Seed sweeps" in (tmp_path / "comparison.md").read_text()
