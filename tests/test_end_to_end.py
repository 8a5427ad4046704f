"""End to end: `python -m lib run` executes all five notebooks through papermill on generated data and
leaves a complete run folder: executed notebooks, model, TensorBoard logs, metrics, report, TF.js model."""

import json
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from lib import paths, pipeline

pytestmark = pytest.mark.slow


def run_pipeline(outputs, name, *overrides):
    command = [sys.executable, "-m", "lib", "run", "params/demo.yaml", "--name", name, "--outputs", str(outputs)]
    for override in overrides:
        command += ["-p", override]
    result = subprocess.run(command, cwd=paths.PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"pipeline failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return outputs / name, result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The demo recipe shrunk to seconds: 12 images per class at 32 px, 2 epochs."""
    tmp = tmp_path_factory.mktemp("e2e")
    run_dir, result = run_pipeline(
        tmp / "outputs", "tiny", f"data.cache_dir={tmp / 'data'}", "data.generated_images_per_class=12",
        "data.image_size=32", "train.epochs=2", "export.parity_images=4")
    return run_dir, result


def test_every_notebook_is_kept_executed_without_errors(tiny_run):
    run_dir, result = tiny_run
    for name in pipeline.NOTEBOOKS:
        notebook = nbformat.read(run_dir / "notebooks" / f"{name}.ipynb", as_version=4)
        errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.get("output_type") == "error"]
        assert not errors, f"{name}: {errors[0]['ename']}"
        assert any(c.get("outputs") for c in notebook.cells if c.cell_type == "code"), f"{name} shows nothing"
        assert f"{name}: done in" in result.stdout


def test_run_folder_holds_every_product(tiny_run):
    run_dir, _ = tiny_run
    for product in ["params.yaml", "provenance.json", "data/manifest.csv", "data/classes.json",
                    "model/best.keras", "model/history.csv", "metrics.json", "report.md",
                    "plots/confusion_matrix.png", "tfjs/model.json", "tfjs/metadata.json"]:
        assert (run_dir / product).is_file() and (run_dir / product).stat().st_size > 0, product
    assert list((run_dir / "logs").rglob("events.out.tfevents.*")), "no TensorBoard event files"
    assert list((run_dir / "tfjs").glob("*.bin")), "no TF.js weight files"


def test_split_keeps_each_lesion_in_one_subset(tiny_run):
    run_dir, _ = tiny_run
    manifest = pd.read_csv(run_dir / "data" / "manifest.csv")
    assert set(manifest["split"]) == {"train", "validation", "test"}
    assert manifest.groupby("lesion_id")["split"].nunique().max() == 1


def test_metrics_are_reported_on_the_test_split(tiny_run):
    run_dir, _ = tiny_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    manifest = pd.read_csv(run_dir / "data" / "manifest.csv")
    assert metrics["n_test"] == (manifest["split"] == "test").sum()
    for key in ["accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "top2_accuracy", "top3_accuracy"]:
        assert 0.0 <= metrics[key] <= 1.0, key
    assert "accuracy" in (run_dir / "report.md").read_text().lower()


def test_tfjs_model_json_describes_a_graph_model_with_its_weights(tiny_run):
    run_dir, _ = tiny_run
    model = json.loads((run_dir / "tfjs" / "model.json").read_text())
    assert model["format"] == "graph-model"
    shards = [path for group in model["weightsManifest"] for path in group["paths"]]
    assert all((run_dir / "tfjs" / shard).is_file() for shard in shards)
    metadata = json.loads((run_dir / "tfjs" / "metadata.json").read_text())
    classes = json.loads((run_dir / "data" / "classes.json").read_text())["classes"]
    assert [c if isinstance(c, str) else c["name"] for c in metadata["classes"]] == classes


def test_rerun_with_the_same_name_is_refused_and_changes_nothing(tiny_run):
    run_dir, _ = tiny_run
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    result = subprocess.run([sys.executable, "-m", "lib", "run", "params/demo.yaml", "--name", "tiny",
                             "--outputs", str(run_dir.parent)], cwd=paths.PROJECT_ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 1 and "--resume" in result.stderr
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == before


def test_a_run_name_with_spaces_and_accents_runs_to_the_end(tmp_path):
    name = "run with spaces é"
    run_dir, _ = run_pipeline(
        tmp_path / "outputs", name, f"data.cache_dir={tmp_path / 'data'}", "data.generated_images_per_class=12",
        "data.image_size=32", "train.epochs=1", "export.parity_images=4", "export.browser_parity=off")
    assert run_dir.name == name and (run_dir / "tfjs" / "model.json").is_file()
    assert json.loads((run_dir / "tfjs" / "metadata.json").read_text())["run_name"] == name
