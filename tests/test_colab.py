"""Colab setup: a no-op elsewhere; on Colab it installs what is missing or older than the project needs, never
Colab's TensorFlow, Keras, numpy or compiled packages, keeps outputs/ and data/ on Drive without replacing local files,
copies images read every epoch off Drive, and hands the run over as a zip. Colab is faked with a module."""

import os
import re
import subprocess
import sys
import types
import zipfile

import pytest

from lib import colab, paths
from lib.errors import SetupError

# Colab's versions of the packages the setup looks at (shared/colab/pip-freeze.txt, 2026-08-19)
COLAB_VERSIONS = {"tensorflow": "2.20.0", "keras": "3.13.2", "numpy": "2.1.3", "kaggle": "2.0.2",
                  "tensorflow-hub": "0.16.1", "tf-keras": "2.20.1", "packaging": "26.3"}


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    """A `google.colab` whose drive.mount creates <tmp>/drive/MyDrive and whose files.download records the path."""
    calls = types.SimpleNamespace(mounts=[], downloads=[])
    module = types.ModuleType("google.colab")
    module.drive = types.SimpleNamespace(mount=lambda point: (
        calls.mounts.append(point), (tmp_path / "drive" / "MyDrive").mkdir(parents=True, exist_ok=True)))
    module.files = types.SimpleNamespace(download=calls.downloads.append)
    monkeypatch.setitem(sys.modules, "google.colab", module)
    monkeypatch.setattr(colab, "DRIVE_MOUNT_POINT", tmp_path / "drive")
    return calls


@pytest.fixture
def not_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)


def test_outside_colab_setup_does_nothing(not_colab, tmp_path):
    assert colab.setup(mount_drive=True, project_root=tmp_path) == "not on Colab: nothing to set up"
    assert list(tmp_path.iterdir()) == []


def names(requirements):
    return [requirement.name for requirement in requirements]


def test_on_colabs_packages_the_setup_adds_papermill_and_tfjs_and_upgrades_the_older_kaggle():
    assert names(colab.packages_to_install(COLAB_VERSIONS)) == ["papermill", "kaggle", "tensorflowjs"]


def test_packages_as_new_as_needed_are_kept_and_newer_ones_too():
    installed = {**COLAB_VERSIONS, "papermill": "2.7.0", "kaggle": "2.3.0", "tensorflowjs": "4.22.0"}
    assert colab.packages_to_install(installed) == []
    assert names(colab.packages_to_install({**installed, "tensorflowjs": "4.21.1"})) == ["tensorflowjs"]


def test_the_setup_refuses_a_requirement_on_tensorflow_keras_or_numpy():
    for name in ("tensorflow", "Keras", "numpy"):
        with pytest.raises(SetupError, match="never installed"):
            colab.packages_to_install({}, [colab.Requirement(name, minimum="1", install=f"{name}==9")])


def test_install_commands_hold_colabs_builds_and_add_tfjs_without_its_dependencies(tmp_path):
    commands = colab.install_commands(colab.packages_to_install(COLAB_VERSIONS), tmp_path / "held.txt")
    with_dependencies, without = commands
    assert with_dependencies == ["install", "--quiet", "--constraint", str(tmp_path / "held.txt"),
                                 "papermill==2.7.0", "kaggle==2.2.4"]
    assert without == ["install", "--quiet", "--no-deps", "tensorflowjs==4.22.0"]


def fake_distribution(name, version, wheel):
    return types.SimpleNamespace(metadata={"Name": name}, version=version,
                                 read_text=lambda filename: wheel if filename == "WHEEL" else None)


def test_held_versions_are_tensorflow_keras_numpy_and_every_compiled_package():
    pure, compiled = "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n", "Wheel-Version: 1.0\nRoot-Is-Purelib: false\n"
    distributions = [fake_distribution("keras", "3.13.2", pure), fake_distribution("tensorflow", "2.20.0", compiled),
                     fake_distribution("grpcio", "1.83.0", compiled), fake_distribution("papermill", "2.7.0", pure),
                     fake_distribution("python-apt", "0.0.0", None)]  # installed by apt: no wheel metadata
    assert colab.held_versions(distributions) == {"keras": "3.13.2", "tensorflow": "2.20.0", "grpcio": "1.83.0",
                                                  "python-apt": "0.0.0"}


def test_colab_installs_the_versions_requirements_txt_pins_and_tfjs_declares():
    """A pin of requirements.txt, else (tensorflow-hub, which Colab ships) the minimum tensorflowjs declares."""
    import importlib.metadata

    from packaging.version import Version

    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (paths.PROJECT_ROOT / "requirements.txt").read_text(), re.M))
    pins = {colab.normalize(name): version for name, version in pins.items()}
    declared = dict(re.match(r"([A-Za-z0-9_.-]+)\s*>=\s*([^,;\s]+)", line).groups()
                    for line in importlib.metadata.requires("tensorflowjs") if ">=" in line)
    declared = {colab.normalize(name): version for name, version in declared.items()}
    for requirement in colab.REQUIREMENTS:
        name, version = requirement.install.split("==")
        expected = pins.get(colab.normalize(name)) or declared.get(colab.normalize(name))
        assert version == expected, f"{requirement.install}: requirements.txt or tensorflowjs says {expected}"
        assert Version(requirement.minimum) <= Version(version), requirement


def fake_pip(monkeypatch, versions_before, versions_after, returncode=0):
    """installed_versions() answers `versions_before`, then `versions_after` once pip ran; pip calls are recorded."""
    calls, state = [], {"ran": False}

    def run(command, **options):
        calls.append(command)
        state["ran"] = True
        return subprocess.CompletedProcess(command, returncode, "", "ERROR: ResolutionImpossible: numpy==2.1.3")

    monkeypatch.setattr(colab, "installed_versions", lambda: dict(versions_after if state["ran"] else versions_before))
    monkeypatch.setattr(colab, "held_versions", lambda: {"numpy": "2.1.3", "tensorflow": "2.20.0"})
    monkeypatch.setattr(colab.subprocess, "run", run)
    return calls


def test_install_reports_what_it_installed_and_what_it_kept(monkeypatch):
    after = {**COLAB_VERSIONS, "papermill": "2.7.0", "ansicolors": "1.1.8", "kaggle": "2.2.4", "tensorflowjs": "4.22.0"}
    calls = fake_pip(monkeypatch, COLAB_VERSIONS, after)
    summary = colab.install_missing_packages()
    assert summary == ("Colab: installed ansicolors 1.1.8, kaggle 2.0.2 -> 2.2.4, papermill 2.7.0, tensorflowjs 4.22.0 "
                       "(tensorflow 2.20.0, keras 3.13.2, numpy 2.1.3 kept)")
    assert [command[:3] for command in calls] == [[sys.executable, "-m", "pip"]] * 2


def test_install_that_changed_a_held_package_stops_the_setup(monkeypatch):
    fake_pip(monkeypatch, COLAB_VERSIONS, {**COLAB_VERSIONS, "numpy": "2.3.0", "papermill": "2.7.0"})
    with pytest.raises(SetupError, match="changed Colab's own numpy"):
        colab.install_missing_packages()


def test_failed_pip_stops_the_setup_with_its_message(monkeypatch):
    fake_pip(monkeypatch, COLAB_VERSIONS, COLAB_VERSIONS, returncode=1)
    with pytest.raises(SetupError, match="(?s)failed.*lib.colab.REQUIREMENTS.*ResolutionImpossible"):
        colab.install_missing_packages()


def test_nothing_to_install_runs_no_pip(monkeypatch):
    present = {**COLAB_VERSIONS, "papermill": "2.7.0", "kaggle": "2.2.4", "tensorflowjs": "4.22.0"}
    calls = fake_pip(monkeypatch, present, present)
    assert colab.install_missing_packages().startswith("Colab: every package the project needs is there")
    assert calls == []


def test_drive_keeps_outputs_and_data_and_mounts_once(fake_colab, tmp_path):
    project = tmp_path / "project"
    (project / "outputs").mkdir(parents=True)
    (project / "outputs" / ".gitkeep").touch()
    summary = colab.setup(mount_drive=True, project_root=project, install=False)
    assert fake_colab.mounts == [str(tmp_path / "drive")]
    for name in ("outputs", "data"):
        assert (project / name).is_symlink()
        assert (project / name).resolve() == (tmp_path / "drive" / colab.DEFAULT_DRIVE_FOLDER / name).resolve()
    assert "outputs, data" in summary
    colab.setup(mount_drive=True, project_root=project, install=False)
    assert len(fake_colab.mounts) == 1, "an already mounted Drive is not mounted again"


def test_drive_never_replaces_a_local_folder_holding_files(fake_colab, tmp_path):
    project = tmp_path / "project"
    (project / "outputs" / "old-run").mkdir(parents=True)
    summary = colab.setup(mount_drive=True, project_root=project, install=False)
    assert (project / "outputs" / "old-run").is_dir() and not (project / "outputs").is_symlink()
    assert "data" in summary and "outputs" not in summary.split("kept in")[0].replace("Drive: ", "")


def test_without_drive_nothing_is_mounted(fake_colab, tmp_path):
    colab.setup(mount_drive=False, project_root=tmp_path, install=False)
    assert fake_colab.mounts == [] and list(tmp_path.iterdir()) == []


def run_on_drive(tmp_path, images=("a.png", "b.png")):
    """A run folder on the fake Drive, reached as Colab does through the project's outputs/ link."""
    on_drive = tmp_path / "drive" / "MyDrive" / "outputs"
    processed = on_drive / "demo" / "data" / "processed"
    processed.mkdir(parents=True)
    for name in images:
        (processed / name).write_bytes(name.encode() * 100)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "outputs").symlink_to(on_drive, target_is_directory=True)
    return tmp_path / "project" / "outputs" / "demo"


def test_stage_images_outside_colab_reads_the_run_folder(not_colab, tmp_path):
    assert colab.stage_images(tmp_path / "run", local_root=tmp_path / "local") == tmp_path / "run"
    assert not (tmp_path / "local").exists()


def test_stage_images_of_a_run_on_the_colab_disk_reads_the_run_folder(fake_colab, tmp_path):
    (tmp_path / "run" / "data" / "processed").mkdir(parents=True)
    assert colab.stage_images(tmp_path / "run", local_root=tmp_path / "local") == tmp_path / "run"
    assert not (tmp_path / "local").exists()


def test_stage_images_copies_a_run_on_drive_to_the_local_disk_then_only_what_changed(fake_colab, tmp_path):
    run_dir = run_on_drive(tmp_path)
    folder = colab.stage_images(run_dir, local_root=tmp_path / "local")
    assert folder == tmp_path / "local" / "demo"
    copies = folder / "data" / "processed"
    assert sorted(path.name for path in copies.iterdir()) == ["a.png", "b.png"]
    assert (copies / "a.png").read_bytes() == (run_dir / "data" / "processed" / "a.png").read_bytes()
    (copies / "a.png").write_bytes(b"marker".ljust(500, b"."))  # same size as the original
    os.utime(copies / "a.png", ns=(0, (run_dir / "data" / "processed" / "a.png").stat().st_mtime_ns))
    (run_dir / "data" / "processed" / "b.png").unlink()
    (run_dir / "data" / "processed" / "c.png").write_bytes(b"new")
    colab.stage_images(run_dir, local_root=tmp_path / "local")
    assert sorted(path.name for path in copies.iterdir()) == ["a.png", "c.png"]
    assert (copies / "a.png").read_bytes().startswith(b"marker"), "unchanged (same size and time): not copied"


def test_stage_images_before_preprocessing_says_to_run_notebook_02(fake_colab, tmp_path):
    run_dir = tmp_path / "drive" / "MyDrive" / "run"
    run_dir.mkdir(parents=True)
    with pytest.raises(SetupError, match="02_preprocess"):
        colab.stage_images(run_dir, local_root=tmp_path / "local")


def finished_run(root):
    run_dir = root / "demo"
    for relative, content in {"report.md": "# Evaluation report: demo\n", "tfjs/model.json": "{}",
                              "tfjs/group1-shard1of1.bin": "w", "plots/roc.png": "png", "model/best.keras": "k",
                              "data/processed/a.png": "big", "features/train.npy": "big"}.items():
        (run_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / relative).write_text(content)
    return run_dir


def test_deliver_run_on_colab_downloads_a_zip_with_the_tfjs_model_and_without_caches(fake_colab, tmp_path):
    run_dir = finished_run(tmp_path)
    archive = colab.deliver_run(run_dir)
    assert fake_colab.downloads == [str(archive)]
    members = zipfile.ZipFile(archive).namelist()
    assert {"demo/tfjs/model.json", "demo/report.md", "demo/plots/roc.png", "demo/model/best.keras"} <= set(members)
    assert not [m for m in members if m.startswith(("demo/data/processed/", "demo/features/"))]


def test_deliver_run_elsewhere_makes_no_zip(not_colab, tmp_path):
    assert colab.deliver_run(finished_run(tmp_path)) is None


def test_show_results_displays_the_report_the_plots_and_the_tfjs_path(monkeypatch, tmp_path, capsys):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objects: shown.extend(objects))
    monkeypatch.setattr(IPython.display, "Image", lambda filename: ("image", filename))
    run_dir = finished_run(tmp_path)
    assert colab.show_results(run_dir) == run_dir / "tfjs"
    assert "# Evaluation report: demo" in shown[0].data
    assert shown[1:] == [("image", str(run_dir / "plots" / "roc.png"))]
    assert f"TF.js model: {run_dir / 'tfjs' / 'model.json'}" in capsys.readouterr().out


def test_show_results_of_an_unfinished_run_names_the_missing_step(tmp_path):
    run_dir = finished_run(tmp_path)
    (run_dir / "tfjs" / "model.json").unlink()
    with pytest.raises(SetupError, match="05_convert_tfjs"):
        colab.show_results(run_dir)
