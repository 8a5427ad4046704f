"""The notebooks as committed: in run order, without outputs, one `parameters` cell each whose defaults
validate, and the same setup cell, which fetches the project on a fresh Colab machine and does nothing
else anywhere else (Colab is faked with a module)."""

import os
import subprocess
import sys
import types

import nbformat
import pytest
from IPython.core.inputtransformer2 import TransformerManager

from lib import colab, params, paths, pipeline

NOTEBOOKS = {name: nbformat.read(paths.NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4) for name in pipeline.NOTEBOOKS}


def code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def parameters_cells(notebook):
    return [cell for cell in code_cells(notebook) if "parameters" in cell.metadata.get("tags", [])]


def setup_cell(notebook):
    """The code cell right after the parameters cell, up to its `colab.setup(...)` line (what follows
    reads the run and differs between notebooks)."""
    cells = code_cells(notebook)
    source = cells[cells.index(parameters_cells(notebook)[0]) + 1].source
    return source[:source.index("\n", source.index("colab.setup(")) + 1]


def test_the_notebooks_are_the_five_steps_in_run_order():
    assert sorted(path.stem for path in paths.NOTEBOOKS_DIR.glob("*.ipynb")) == list(pipeline.NOTEBOOKS)


@pytest.mark.parametrize("name", pipeline.NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name):
    for cell in code_cells(NOTEBOOKS[name]):
        assert cell.outputs == [] and cell.execution_count is None, f"{name}: strip the outputs before committing"


@pytest.mark.parametrize("name", pipeline.NOTEBOOKS)
def test_notebook_has_one_parameters_cell_whose_defaults_validate(name):
    cells = parameters_cells(NOTEBOOKS[name])
    assert len(cells) == 1, f"{name} has {len(cells)} cells tagged parameters"
    defaults = {}
    exec(cells[0].source, {}, defaults)
    assert defaults["run_dir"] == "outputs/demo"
    assert isinstance(defaults["colab_mount_drive"], bool) and isinstance(defaults["colab_project_dir"], str)
    assert defaults["colab_repository"] == paths.REPOSITORY_URL, "python -m lib repository URL rewrites it"
    if "params_file" in defaults:
        assert params.load(paths.resolve(defaults["params_file"])).name == "demo"
    for batch_key, value in {**pipeline.COLAB_BATCH_PARAMETERS, **pipeline.BATCH_PARAMETERS.get(name, {})}.items():
        assert type(defaults[batch_key]) is type(value), f"the runner sets {batch_key}, which {name} must declare"


def test_every_notebook_starts_with_the_same_setup_cell():
    first, *others = (setup_cell(notebook) for notebook in NOTEBOOKS.values())
    assert "colab.setup(" in first
    assert all(other == first for other in others)


def run_setup_cell(cwd, namespace, monkeypatch):
    """Execute the setup cell's Python with colab.setup recorded instead of run; returns its calls."""
    calls = []
    monkeypatch.setattr(colab, "setup", lambda **options: calls.append(options))
    monkeypatch.chdir(cwd)
    code = TransformerManager().transform_cell(setup_cell(NOTEBOOKS["02_preprocess"]))
    exec(code, {**namespace})
    return calls


def colab_parameters(tmp_path, repository="https://example.org/project.git"):
    return {"colab_repository": repository, "colab_project_dir": str(tmp_path / "project"), "colab_mount_drive": True}


def git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def repository(tmp_path):
    """A git repository holding a `lib` folder, as the project's is."""
    origin = tmp_path / "origin"
    (origin / "lib").mkdir(parents=True)
    (origin / "lib" / "__init__.py").write_text("")
    git("init", "--quiet", cwd=origin)
    git("add", "lib", cwd=origin)
    git("commit", "--quiet", "-m", "project", cwd=origin)
    return origin


def test_setup_cell_outside_colab_only_moves_from_notebooks_to_the_project_root(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    calls = run_setup_cell(paths.NOTEBOOKS_DIR, colab_parameters(tmp_path), monkeypatch)
    assert os.getcwd() == str(paths.PROJECT_ROOT)
    assert calls == [{"mount_drive": True}], "colab.setup decides itself that this is not Colab"
    assert not (tmp_path / "project").exists()


def test_setup_cell_on_a_fresh_colab_machine_clones_the_project_and_works_from_it(tmp_path, monkeypatch, repository):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    calls = run_setup_cell(tmp_path, colab_parameters(tmp_path, repository.as_uri()), monkeypatch)
    assert (tmp_path / "project" / "lib" / "__init__.py").is_file()
    assert os.getcwd() == str(tmp_path / "project") and calls == [{"mount_drive": True}]


def test_setup_cell_stops_at_a_failed_clone_and_says_to_set_colab_repository(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    missing = (tmp_path / "no-such-repository").as_uri()
    with pytest.raises(RuntimeError, match=f"(?s)git clone {missing} failed: .*Set colab_repository") as failure:
        run_setup_cell(tmp_path, colab_parameters(tmp_path, missing), monkeypatch)
    assert "Cloning into" in str(failure.value), "git's own explanation is in the message"
    assert os.getcwd() == str(tmp_path), "the cell stopped before moving into a folder that is not there"


def test_setup_cell_on_colab_reuses_a_copy_already_there(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    (tmp_path / "project" / "lib").mkdir(parents=True)
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: pytest.fail(f"ran {args}: nothing to clone"))
    run_setup_cell(tmp_path, colab_parameters(tmp_path), monkeypatch)
    assert os.getcwd() == str(tmp_path / "project")


@pytest.mark.parametrize("name", pipeline.NOTEBOOKS)
def test_each_step_says_in_its_first_cell_that_on_colab_it_needs_the_run_folder_on_drive(name):
    first = NOTEBOOKS[name].cells[0]
    assert first.cell_type == "markdown" and "On Colab" in first.source and "Google Drive" in first.source
    assert "colab.ipynb" in first.source, "and points at the one-runtime notebook"


ONE_CLICK = nbformat.read(paths.PROJECT_ROOT / "colab.ipynb", as_version=4)


def test_one_click_notebook_is_committed_without_outputs_and_its_defaults_validate():
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code_cells(ONE_CLICK))
    cells = parameters_cells(ONE_CLICK)
    assert len(cells) == 1
    defaults = {}
    exec(cells[0].source, {}, defaults)
    assert params.load(paths.resolve(defaults["params_file"]), defaults["overrides"]).name == "demo"
    assert defaults["colab_repository"] == paths.REPOSITORY_URL
    assert defaults["keep_on_drive"] is False, "one click: no Drive permission prompt unless asked for"


def test_one_click_notebook_fetches_the_project_as_the_steps_do():
    steps = setup_cell(NOTEBOOKS["01_download"])
    fetch = steps[:steps.index("elif not os.path.isdir")]
    cells = code_cells(ONE_CLICK)
    assert cells[cells.index(parameters_cells(ONE_CLICK)[0]) + 1].source.startswith(fetch)
