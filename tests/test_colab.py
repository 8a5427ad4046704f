"""Colab setup: a no-op elsewhere; on Colab it installs only what is missing, never a TensorFlow, and
keeps outputs/ and data/ on Drive without replacing local files. Colab is faked with a module."""

import sys
import types

import pytest

from lib import colab


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    """A `google.colab` whose drive.mount creates <tmp>/drive/MyDrive, recording each call."""
    mounts = []
    drive = types.SimpleNamespace(mount=lambda point: (mounts.append(point), (tmp_path / "drive" / "MyDrive").mkdir(
        parents=True, exist_ok=True)))
    module = types.ModuleType("google.colab")
    module.drive = drive
    monkeypatch.setitem(sys.modules, "google.colab", module)
    monkeypatch.setattr(colab, "DRIVE_MOUNT_POINT", tmp_path / "drive")
    return mounts


def test_outside_colab_setup_does_nothing(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert colab.setup(mount_drive=True, project_root=tmp_path) == "not on Colab: nothing to set up"
    assert list(tmp_path.iterdir()) == []


def test_install_commands_never_install_tensorflow_and_add_tfjs_without_its_dependencies():
    commands = colab.install_commands({"tensorflow": "2.21.0", "keras": "3.12.0"})
    flat = [arg for command in commands for arg in command]
    assert not any(arg.startswith(("tensorflow==", "tensorflow-decision-forests", "keras")) for arg in flat)
    no_deps = next(c for c in commands if "--no-deps" in c)
    assert "tensorflowjs==4.22.0" in no_deps
    assert "papermill==2.7.0" in next(c for c in commands if "--no-deps" not in c)


def test_install_commands_are_empty_when_everything_is_present():
    present = {r.split("==")[0]: "x" for r in colab.COLAB_PACKAGES + colab.COLAB_PACKAGES_NO_DEPS}
    assert colab.install_commands(present) == []


def test_drive_keeps_outputs_and_data_and_mounts_once(fake_colab, tmp_path):
    project = tmp_path / "project"
    (project / "outputs").mkdir(parents=True)
    (project / "outputs" / ".gitkeep").touch()
    summary = colab.setup(mount_drive=True, project_root=project, install=False)
    assert fake_colab == [str(tmp_path / "drive")]
    for name in ("outputs", "data"):
        assert (project / name).is_symlink()
        assert (project / name).resolve() == (tmp_path / "drive" / colab.DEFAULT_DRIVE_FOLDER / name).resolve()
    assert "outputs, data" in summary
    colab.setup(mount_drive=True, project_root=project, install=False)
    assert len(fake_colab) == 1, "an already mounted Drive is not mounted again"


def test_drive_never_replaces_a_local_folder_holding_files(fake_colab, tmp_path):
    project = tmp_path / "project"
    (project / "outputs" / "old-run").mkdir(parents=True)
    summary = colab.setup(mount_drive=True, project_root=project, install=False)
    assert (project / "outputs" / "old-run").is_dir() and not (project / "outputs").is_symlink()
    assert "data" in summary and "outputs" not in summary.split("kept in")[0].replace("Drive: ", "")


def test_without_drive_nothing_is_mounted(fake_colab, tmp_path):
    colab.setup(mount_drive=False, project_root=tmp_path, install=False)
    assert fake_colab == [] and list(tmp_path.iterdir()) == []
