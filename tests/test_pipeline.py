"""The runner: run folders are created once and never overwritten; notebooks run in order; a failure
names the notebook and cell and keeps the executed copy; --resume continues where it stopped."""

import json

import nbformat
import pytest

from lib import artifacts, params, pipeline
from lib.errors import ParamsError, RunError


def make_notebooks(folder, failing=None):
    """Five tiny notebooks named like the real ones; each records its step (lib.artifacts) as the real ones do and
    appends its name to <run_dir>/ran.txt.
    The notebook named `failing` raises in its second code cell unless <run_dir>/fixed exists."""
    folder.mkdir(exist_ok=True)
    for name in pipeline.NOTEBOOKS:
        parameters = nbformat.v4.new_code_cell('run_dir = "outputs/demo"')
        parameters.metadata["tags"] = ["parameters"]
        cells = [parameters, nbformat.v4.new_code_cell(
            f"import os, pathlib\nfrom lib import artifacts\nartifacts.start_step(run_dir, '{name}')\n"
            f"with open(pathlib.Path(run_dir, 'ran.txt'), 'a') as f: f.write('{name}\\n')\n"
            "os.write(2, b'C-level noise\\n')  # as TensorFlow's C++ start-up lines are written\nprint('cell done')")]
        if name == failing:
            cells.append(nbformat.v4.new_code_cell(
                "if not pathlib.Path(run_dir, 'fixed').exists():\n    raise ValueError('planted failure')"))
        cells.append(nbformat.v4.new_code_cell(f"artifacts.finish_step(run_dir, '{name}')"))
        notebook = nbformat.v4.new_notebook(cells=cells)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, folder / f"{name}.ipynb")
    return folder


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("name: tiny\n")
    return path


def ran(run_dir):
    return (run_dir / "ran.txt").read_text().split()


def test_run_executes_every_notebook_in_order_and_keeps_each_executed_copy(tmp_path, params_file, monkeypatch):
    monkeypatch.delenv("PYTEST_CURRENT_TEST")  # ipykernel copies fd output into cells except under pytest
    notebooks = make_notebooks(tmp_path / "notebooks")
    run_dir = pipeline.run(params_file, ["seed=7"], outputs_dir=tmp_path / "out", notebooks_dir=notebooks)
    assert run_dir == tmp_path / "out" / "tiny"
    assert ran(run_dir) == list(pipeline.NOTEBOOKS)
    for name in pipeline.NOTEBOOKS:
        executed = nbformat.read(run_dir / "notebooks" / f"{name}.ipynb", as_version=4)
        injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert str(run_dir.resolve()) in injected[0].source
        assert "C-level noise" in (run_dir / "notebooks" / f"{name}.kernel.log").read_text(), "kernel stderr goes to a log"
        printed = [output.get("text", "") for cell in executed.cells for output in cell.get("outputs", [])]
        assert not [text for text in printed if "C-level noise" in text], "not into the record"
    assert params.load_run(run_dir).seed == 7
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["seed"] == 7 and provenance["packages"]["papermill"]
    assert artifacts.finished_steps(run_dir) == list(pipeline.NOTEBOOKS)


def test_an_existing_run_folder_is_refused_without_resume(tmp_path, params_file):
    run_dir = tmp_path / "out" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "precious.txt").write_text("keep me")
    with pytest.raises(RunError, match="--resume.*--name"):
        pipeline.run(params_file, outputs_dir=tmp_path / "out", notebooks_dir=make_notebooks(tmp_path / "nb"))
    assert (run_dir / "precious.txt").read_text() == "keep me"


@pytest.mark.slow
def test_name_option_makes_a_new_run_folder(tmp_path, params_file):
    params_lib = params.load(params_file)
    pipeline.create_run(tmp_path / "out" / "tiny", params_lib, params_file)
    run_dir = pipeline.run(params_file, name="tiny2", outputs_dir=tmp_path / "out",
                           notebooks_dir=make_notebooks(tmp_path / "nb"))
    assert run_dir.name == "tiny2" and params.load_run(run_dir).name == "tiny2"


@pytest.mark.slow
def test_failure_names_notebook_and_cell_then_resume_continues_from_it(tmp_path, params_file):
    notebooks = make_notebooks(tmp_path / "notebooks", failing="02_preprocess")
    with pytest.raises(RunError) as error:
        pipeline.run(params_file, outputs_dir=tmp_path / "out", notebooks_dir=notebooks)
    run_dir = tmp_path / "out" / "tiny"
    message = str(error.value)
    assert "02_preprocess" in message and "In [4] (`if not pathlib.Path(run_dir, 'fixed').exists():`)" in message and "planted failure" in message
    executed = run_dir / "notebooks" / "02_preprocess.ipynb"
    assert str(executed) in message and executed.is_file()
    assert ran(run_dir) == ["01_download", "02_preprocess"]

    (run_dir / "fixed").touch()
    pipeline.run(params_file, outputs_dir=tmp_path / "out", notebooks_dir=notebooks, resume=True)
    assert ran(run_dir) == ["01_download", "02_preprocess", "02_preprocess", "03_train", "04_evaluate",
                            "05_convert_tfjs"]


def test_resume_with_different_params_is_refused(tmp_path, params_file):
    pipeline.create_run(tmp_path / "out" / "tiny", params.load(params_file), params_file)
    with pytest.raises(RunError, match="train.epochs: 30 -> 1"):
        pipeline.run(params_file, ["train.epochs=1"], outputs_dir=tmp_path / "out", resume=True,
                     notebooks_dir=make_notebooks(tmp_path / "nb"))


@pytest.mark.slow
def test_rerunning_a_notebook_marks_the_later_ones_stale_until_they_run_again(tmp_path, params_file):
    notebooks = make_notebooks(tmp_path / "notebooks")
    run_dir = pipeline.run(params_file, outputs_dir=tmp_path / "out", notebooks_dir=notebooks)
    pipeline.run_notebook(run_dir, "03_train", notebooks_dir=notebooks)
    assert artifacts.finished_steps(run_dir) == ["01_download", "02_preprocess", "03_train"]
    assert "03_train ran again" in artifacts.stale_reason(run_dir, "05_convert_tfjs")
    pipeline.run(params_file, outputs_dir=tmp_path / "out", resume=True, notebooks_dir=notebooks)
    assert ran(run_dir)[-3:] == ["03_train", "04_evaluate", "05_convert_tfjs"]
    assert artifacts.finished_steps(run_dir) == list(pipeline.NOTEBOOKS)
    assert artifacts.stale_reason(run_dir, "05_convert_tfjs") is None


def test_a_notebook_that_does_not_record_its_end_is_not_trusted(tmp_path, params_file):
    notebooks = make_notebooks(tmp_path / "notebooks")
    (notebooks / "01_download.ipynb").write_text((notebooks / "01_download.ipynb").read_text().replace(
        "artifacts.finish_step(run_dir, '01_download')", "pass"))
    with pytest.raises(RunError, match="01_download ran without recording its end"):
        pipeline.run(params_file, outputs_dir=tmp_path / "out", notebooks_dir=notebooks)


def test_prepare_run_creates_the_folder_once_for_a_notebook_opened_by_hand(tmp_path, params_file):
    run_dir = tmp_path / "out" / "byhand"
    assert pipeline.prepare_run(run_dir, params_file).name == "tiny"
    (run_dir / "marker").touch()
    assert pipeline.prepare_run(run_dir, params_file).name == "tiny"
    assert (run_dir / "marker").exists()


def test_unknown_notebook_is_named_with_the_choices(tmp_path, params_file):
    run_dir = pipeline.create_run(tmp_path / "run", params.load(params_file), params_file)
    with pytest.raises(RunError, match="choose one of: 01_download"):
        pipeline.run_notebook(run_dir, "03_training")


IMPOSSIBLE_NAMES = {"separator": "a/b", "windows separator": "a\\b", "dot": ".", "dot dot": "..", "hidden": ".x",
                    "empty": "", "blank": "  ", "tab": "a\tb", "newline": "a\nb", "escape": "a\x1b[2Jb",
                    "line separator": "a\u2028b"}


@pytest.mark.parametrize("name", IMPOSSIBLE_NAMES.values(), ids=IMPOSSIBLE_NAMES.keys())
@pytest.mark.parametrize("given_by", ["file", "--name"])
def test_a_name_that_cannot_be_a_folder_is_refused_before_anything_starts(tmp_path, name, given_by):
    params_file = tmp_path / "named.yaml"
    params_file.write_text(f"name: {json.dumps(name) if given_by == 'file' else 'fine'}\n")  # JSON is YAML
    with pytest.raises(ParamsError) as error:
        pipeline.run(params_file, name=name if given_by == "--name" else None, outputs_dir=tmp_path / "out",
                     notebooks_dir=make_notebooks(tmp_path / "nb"))
    assert "parameter 'name'" in str(error.value)
    assert ("from --name" in str(error.value)) == (given_by == "--name")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("given_by", ["file", "--name"])
def test_a_name_longer_than_the_file_system_takes_is_refused_in_bytes(tmp_path, given_by):
    limit = params.name_max(tmp_path)
    name = "é" * (limit // 2 + 1)  # under the limit in characters, over it in UTF-8 bytes
    params_file = tmp_path / "named.yaml"
    params_file.write_text(f"name: {name if given_by == 'file' else 'fine'}\n", encoding="utf-8")
    with pytest.raises(ParamsError, match=f"at most {limit}"):
        pipeline.run(params_file, name=name if given_by == "--name" else None, outputs_dir=tmp_path / "out",
                     notebooks_dir=make_notebooks(tmp_path / "nb"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["run with spaces é", "皮膚 病変", "a" * 255], ids=["spaces", "cjk", "longest"])
def test_any_name_that_is_a_folder_name_makes_its_run_folder(tmp_path, params_file, name, monkeypatch):
    monkeypatch.setattr(pipeline, "run_notebook", lambda *args, **kwargs: 0.0)  # the folder is the point here
    name = name[:params.name_max(tmp_path)]
    run_dir = pipeline.run(params_file, name=name, outputs_dir=tmp_path / "out")
    assert run_dir == tmp_path / "out" / name and params.load_run(run_dir).name == name


def test_an_outputs_folder_that_cannot_be_made_is_a_run_error(tmp_path, params_file):
    (tmp_path / "a file").write_text("not a folder")
    with pytest.raises(RunError, match="cannot create run folder .*a file/tiny: Not a directory"):
        pipeline.run(params_file, outputs_dir=tmp_path / "a file", notebooks_dir=make_notebooks(tmp_path / "nb"))


def test_the_resume_command_after_a_failure_quotes_a_name_with_spaces(tmp_path, params_file):
    with pytest.raises(RunError, match="--name 'two words' --resume"):
        pipeline.run(params_file, name="two words", outputs_dir=tmp_path / "out",
                     notebooks_dir=make_notebooks(tmp_path / "nb", failing="01_download"))


def test_provenance_records_the_command_as_it_can_be_typed_again(tmp_path, params_file):
    command = ["python", "-m", "lib", "run", str(params_file), "--name", "two words"]
    run_dir = pipeline.create_run(tmp_path / "two words", params.load(params_file), params_file, command=command)
    assert json.loads((run_dir / "provenance.json").read_text())["command"].endswith("--name 'two words'")


@pytest.mark.slow
def test_a_run_can_stop_after_a_chosen_notebook_and_resume_later(tmp_path, params_file):
    notebooks = make_notebooks(tmp_path / "notebooks")
    run_dir = pipeline.run(params_file, outputs_dir=tmp_path / "out", notebooks_dir=notebooks, until="03_train")
    assert ran(run_dir) == ["01_download", "02_preprocess", "03_train"]
    pipeline.run(params_file, outputs_dir=tmp_path / "out", resume=True, notebooks_dir=notebooks)
    assert ran(run_dir) == list(pipeline.NOTEBOOKS)
    with pytest.raises(RunError, match="unknown notebook '03' to stop after"):
        pipeline.run(params_file, outputs_dir=tmp_path / "other", notebooks_dir=notebooks, until="03")
