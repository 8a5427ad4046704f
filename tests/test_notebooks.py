"""The notebooks as committed: in run order, without outputs, one `parameters` cell each whose defaults
validate, and the same setup cell, which fetches the project on a fresh Colab machine and does nothing
else anywhere else (Colab is faked with a module)."""

import os
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
    assert isinstance(defaults["colab_mount_drive"], bool) and defaults["colab_repository"].startswith("https://")
    if "params_file" in defaults:
        assert params.load(paths.resolve(defaults["params_file"])).name == "demo"
    for batch_key, value in pipeline.BATCH_PARAMETERS.get(name, {}).items():
        assert type(defaults[batch_key]) is type(value), f"the runner sets {batch_key}, which {name} must declare"


def test_every_notebook_starts_with_the_same_setup_cell():
    first, *others = (setup_cell(notebook) for notebook in NOTEBOOKS.values())
    assert "colab.setup(" in first
    assert all(other == first for other in others)


def run_setup_cell(cwd, namespace, monkeypatch):
    """Execute the setup cell's Python (IPython's `!` lines become get_ipython().system calls, recorded)."""
    commands = []
    shell = types.SimpleNamespace(system=commands.append)
    calls = []
    monkeypatch.setattr(colab, "setup", lambda **options: calls.append(options))
    monkeypatch.chdir(cwd)
    code = TransformerManager().transform_cell(setup_cell(NOTEBOOKS["02_preprocess"]))
    exec(code, {"get_ipython": lambda: shell, **namespace})
    return commands, calls


def colab_parameters(tmp_path):
    return {"colab_repository": "https://example.org/project.git", "colab_project_dir": str(tmp_path / "project"),
            "colab_mount_drive": True}


def test_setup_cell_outside_colab_only_moves_from_notebooks_to_the_project_root(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    commands, calls = run_setup_cell(paths.NOTEBOOKS_DIR, colab_parameters(tmp_path), monkeypatch)
    assert commands == [] and os.getcwd() == str(paths.PROJECT_ROOT)
    assert calls == [{"mount_drive": True}], "colab.setup decides itself that this is not Colab"
    assert not (tmp_path / "project").exists()


def test_setup_cell_on_a_fresh_colab_machine_clones_the_project_and_works_from_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    (tmp_path / "project").mkdir()
    commands, calls = run_setup_cell(tmp_path, colab_parameters(tmp_path), monkeypatch)
    assert commands == ["git clone --depth 1 {colab_repository} {colab_project_dir}"]
    assert os.getcwd() == str(tmp_path / "project") and calls == [{"mount_drive": True}]


def test_setup_cell_on_colab_reuses_a_copy_already_there(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    (tmp_path / "project" / "lib").mkdir(parents=True)
    commands, _ = run_setup_cell(tmp_path, colab_parameters(tmp_path), monkeypatch)
    assert commands == [] and os.getcwd() == str(tmp_path / "project")
