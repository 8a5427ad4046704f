"""Specification of lib.paths: relative paths are the project's, whatever the working folder."""

from pathlib import Path

from lib import paths


def test_relative_paths_are_taken_from_the_project_root_not_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.resolve("params/demo.yaml") == paths.PROJECT_ROOT / "params" / "demo.yaml"
    assert paths.resolve(tmp_path / "x") == tmp_path / "x"
    assert paths.resolve("~/runs") == Path.home() / "runs"
    assert (paths.PROJECT_ROOT / "lib" / "paths.py").is_file()


def test_the_data_cache_is_the_argument_then_the_environment_then_the_project(tmp_path, monkeypatch):
    monkeypatch.delenv("SKIN_LESION_DATA", raising=False)
    assert paths.data_cache_dir() == paths.PROJECT_ROOT / "data"
    monkeypatch.setenv("SKIN_LESION_DATA", str(tmp_path / "env"))
    assert paths.data_cache_dir() == tmp_path / "env"
    assert paths.data_cache_dir(tmp_path / "given") == tmp_path / "given"
