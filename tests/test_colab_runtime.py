"""The Colab route against Colab's own package set. The committed copy of Colab's versions agrees with Colab's list
(whenever ../shared has it); in the Colab-equivalent environment that `bash .ci/colab` builds, the packages are
Colab's, TF-DF is absent, and colab.ipynb runs the demo end to end on a fake google.colab."""

import importlib.metadata
import importlib.util
import json
import os
import signal
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from lib import colab, paths, pipeline

SHARED_COLAB_FREEZE = paths.PROJECT_ROOT.parent / "shared" / "colab" / "pip-freeze.txt"
FAKE_COLAB = paths.PROJECT_ROOT / "tests" / "fake_colab"


def load_colab_packages():
    """.ci/colab_packages.py, a standard-library script (it runs before any venv exists)."""
    spec = importlib.util.spec_from_file_location("colab_packages", paths.PROJECT_ROOT / ".ci" / "colab_packages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_colab_versions_agree_with_colabs_list():
    if not SHARED_COLAB_FREEZE.is_file():
        pytest.skip(f"Colab's list is not at {SHARED_COLAB_FREEZE} (a clone without ../shared)")
    packages = load_colab_packages()
    assert packages.disagreements(packages.PINS, SHARED_COLAB_FREEZE) == []
    pinned, _ = packages.read_pins()
    assert {"tensorflow": "2.20.0", "keras": "3.13.2", "numpy": "2.1.3"}.items() <= pinned.items()


def test_a_pin_that_differs_from_colabs_list_is_reported(tmp_path):
    packages = load_colab_packages()
    colab_list = tmp_path / "pip-freeze.txt"
    colab_list.write_text("tensorflow==2.20.0\nkeras==3.13.2\njedi==0.19.2\n")
    pins = tmp_path / "pins.txt"
    pins.write_text("# header\ntensorflow==2.19.0\nkeras==3.13.2\njedi==0.19.2  # not on Colab's list\n")
    problems = packages.disagreements(pins, colab_list)
    assert "tensorflow==2.19.0 is pinned, Colab has 2.20.0" in problems
    assert "jedi is marked not on Colab's list, which has jedi==0.19.2" in problems
    assert "numpy (the project imports it) is not pinned" in problems


@pytest.fixture(scope="module")
def colab_equivalent():
    """Skip unless in the environment `bash .ci/colab` builds (COLAB_EQUIVALENT=1)."""
    if os.environ.get("COLAB_EQUIVALENT") != "1":
        pytest.skip("runs in the Colab-equivalent environment: bash .ci/colab")


def test_packages_are_colabs_and_the_setup_added_only_what_colab_lacks(colab_equivalent):
    pinned, not_on_colab = load_colab_packages().read_pins()
    installed = colab.installed_versions()
    changed = {name: installed.get(name) for name, version in {**pinned, **not_on_colab}.items()
               if installed.get(name) != version}
    added = {name: version for name, version in installed.items() if name not in pinned and name not in not_on_colab}
    upgraded_by_setup = {colab.normalize(r.name): r.install.split("==")[1] for r in colab.REQUIREMENTS}
    assert changed == {"kaggle": upgraded_by_setup["kaggle"]}, "only the setup's upgrade of Colab's older kaggle"
    assert set(added) <= set(upgraded_by_setup), f"installed beyond the setup's: {added}"
    assert {"papermill", "tensorflowjs"} <= set(added)
    assert importlib.util.find_spec("tensorflow_decision_forests") is None


@pytest.fixture(scope="module")
def one_click_run(colab_equivalent, tmp_path_factory):
    """colab.ipynb executed as Colab would, on a kernel that imports the fake google.colab at start (as Colab's kernel
    imports the real one), on the demo shrunk to seconds; TensorBoard is started by the notebook and stopped here."""
    import papermill

    tmp = tmp_path_factory.mktemp("one click")
    startup = tmp / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab  # as Colab's kernel does\n")
    environment = {"IPYTHONDIR": str(tmp / "ipython"), "FAKE_COLAB_DOWNLOADS": str(tmp / "downloads"),
                   # the environment's programs (tensorboard for %tensorboard) are on PATH, as on Colab
                   "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(FAKE_COLAB), str(paths.PROJECT_ROOT),
                                                               os.environ.get("PYTHONPATH")]))}
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)  # the kernel and the notebooks' kernels it starts inherit them
    executed = tmp / "colab.ipynb"
    overrides = [f"data.cache_dir={tmp / 'data'}", "data.generated_images_per_class=12", "data.image_size=32",
                 "train.epochs=2", "export.parity_images=8"]
    try:
        papermill.execute_notebook(
            str(paths.PROJECT_ROOT / "colab.ipynb"), str(executed), kernel_name="python3", cwd=str(paths.PROJECT_ROOT),
            parameters={"overrides": overrides, "run_name": "one-click", "outputs_dir": str(tmp / "outputs"),
                        "colab_project_dir": str(paths.PROJECT_ROOT)},
            progress_bar=False)
    finally:
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)
        stop_tensorboards_under(tmp)
    return tmp, tmp / "outputs" / "one-click", nbformat.read(executed, as_version=4)


def stop_tensorboards_under(folder):
    """Stop the TensorBoard servers whose logdir lies under `folder` (started by the notebook's %tensorboard)."""
    from tensorboard import manager

    for info in manager.get_all():
        if str(folder) in info.logdir:
            try:
                os.kill(info.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def outputs_of(notebook, first_line):
    """The outputs of the code cell whose source starts with `first_line`."""
    cell = next(c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(first_line))
    return cell.outputs


def text_of(outputs):
    return "".join(o.get("text", "") for o in outputs if o.output_type == "stream")


def test_one_click_notebook_sets_up_shows_tensorboard_and_runs_the_five_notebooks(one_click_run):
    _, run_dir, notebook = one_click_run
    assert "Colab: every package the project needs is there (tensorflow 2.20.0, keras 3.13.2, numpy 2.1.3 kept)" \
        in text_of(outputs_of(notebook, "import os, subprocess, sys"))
    scripts = [o.data.get("application/javascript", "") for o in outputs_of(notebook, "if tensorboard:")
               if o.output_type == "display_data"]
    assert any("google.colab.kernel.proxyPort" in script for script in scripts), "TensorBoard framed as on Colab"
    progress = text_of(outputs_of(notebook, "run_dir = pipeline.run("))
    for number, name in enumerate(pipeline.NOTEBOOKS, start=1):
        assert f"[{number}/5] {name}: done in" in progress
        executed = nbformat.read(run_dir / "notebooks" / f"{name}.ipynb", as_version=4)
        assert not [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


def test_one_click_notebook_shows_the_report_the_plots_and_the_tfjs_model(one_click_run):
    _, run_dir, notebook = one_click_run
    outputs = outputs_of(notebook, "tfjs_dir = colab.show_results(")
    markdown = [o.data["text/markdown"] for o in outputs if o.output_type == "display_data" and "text/markdown" in o.data]
    assert markdown and markdown[0].startswith("# Evaluation report: one-click")
    assert len([o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]) >= 3
    assert f"TF.js model: {run_dir / 'tfjs' / 'model.json'}" in text_of(outputs)


def test_one_click_run_converted_on_colabs_tensorflow_with_browser_parity(one_click_run):
    _, run_dir, _ = one_click_run
    provenance = json.loads((run_dir / "provenance.json").read_text())["packages"]
    assert provenance["tensorflow"] == importlib.metadata.version("tensorflow") == "2.20.0"
    assert provenance["keras"] == "3.13.2" and provenance["tensorflowjs"] == "4.22.0"
    report = json.loads((run_dir / "export.json").read_text())
    installed = report["options"][report["quantize"]]["parity"]
    assert report["browser_parity_measured"] and installed["passes"] and installed["backend"] == "wasm"


def test_one_click_notebook_offers_the_run_as_a_zip_with_the_tfjs_model(one_click_run):
    tmp, run_dir, notebook = one_click_run
    assert "Downloading one-click.zip" in text_of(outputs_of(notebook, "zip_file = colab.deliver_run("))
    members = zipfile.ZipFile(tmp / "downloads" / "one-click.zip").namelist()
    assert {"one-click/tfjs/model.json", "one-click/tfjs/metadata.json", "one-click/report.md"} <= set(members)
