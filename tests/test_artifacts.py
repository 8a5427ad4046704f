"""Specification of lib.artifacts: one reader and one writer per run-folder file, atomic JSON, and the step
records that make a run folder say when its later products were made from an earlier model."""

import json
import os

import pytest

from lib import artifacts
from lib.errors import RunError


def test_json_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    path = artifacts.write_json(tmp_path / "deep" / "metrics.json", {"accuracy": 0.5})
    assert artifacts.read_json(path) == {"accuracy": 0.5}

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        artifacts.write_json(path, {"accuracy": 0.9})
    assert artifacts.read_json(path) == {"accuracy": 0.5}
    assert [entry.name for entry in path.parent.iterdir()] == ["metrics.json"], "no temporary file is left"
    assert artifacts.read_json(tmp_path / "absent.json", missing={}) == {}


def test_manifest_rows_come_with_absolute_paths_under_the_image_root(run_folder, tmp_path):
    test = artifacts.read_manifest(run_folder, split="test")
    assert set(test["split"]) == {"test"} and len(test) == 6
    assert all(path.startswith(str(run_folder)) and os.path.isfile(path) for path in test["abs_path"])
    staged = artifacts.read_manifest(run_folder, image_root=tmp_path / "local")
    assert staged["abs_path"][0] == str(tmp_path / "local" / staged["path"][0])
    assert {"age", "sex", "localization"} <= set(staged.columns)
    assert artifacts.class_names(run_folder) == ["mel", "nv", "vasc"]


def test_a_missing_product_names_the_notebook_that_makes_it(tmp_path):
    with pytest.raises(RunError, match="data/manifest.csv not found: run notebook 02_preprocess"):
        artifacts.read_manifest(tmp_path)
    with pytest.raises(RunError, match="model/best.keras not found: run notebook 03_train"):
        artifacts.load_model(tmp_path)
    with pytest.raises(RunError, match="no test images"):
        artifacts.read_manifest(_folder_without_test(tmp_path), split="test")


def _folder_without_test(tmp_path):
    from tests import runfolders

    return runfolders.write_run_folder(tmp_path / "run", per_class=2, fractions=(0.5, 0.5, 0.0))


def test_starting_a_step_makes_the_later_ones_stale_until_they_finish_again(tmp_path):
    for step in artifacts.STEPS:
        artifacts.start_step(tmp_path, step)
        assert artifacts.finish_step(tmp_path, step) >= 0
    assert artifacts.finished_steps(tmp_path) == list(artifacts.STEPS)

    artifacts.start_step(tmp_path, "03_train")
    assert artifacts.finished_steps(tmp_path) == ["01_download", "02_preprocess"]
    assert artifacts.stale_reason(tmp_path, "04_evaluate").startswith("03_train ran again at ")
    assert artifacts.stale_reason(tmp_path, "02_preprocess") is None
    artifacts.finish_step(tmp_path, "03_train")
    artifacts.start_step(tmp_path, "04_evaluate")
    artifacts.finish_step(tmp_path, "04_evaluate")
    assert artifacts.stale_reason(tmp_path, "04_evaluate") is None
    assert artifacts.stale_reason(tmp_path, "05_convert_tfjs").startswith("03_train ran again")
    progress = json.loads((tmp_path / artifacts.PROGRESS).read_text())
    assert progress["03_train"]["finished_at"] and progress["03_train"]["seconds"] >= 0
    with pytest.raises(RunError, match="unknown step '03_training'"):
        artifacts.start_step(tmp_path, "03_training")
