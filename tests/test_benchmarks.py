"""The benchmarks run for hours on real data that CI does not have, so CI cannot run them; it can check that every
`lib` function or constant they use still exists (a renamed one once broke input_pipeline.py unnoticed)."""

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def lib_references(source):
    """(line, module, attribute) for each `module.attribute` in `source` where `module` came from `from lib import`."""
    tree = ast.parse(source)
    modules = {alias.asname or alias.name: f"lib.{alias.name}" for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.module == "lib" for alias in node.names}
    return [(node.lineno, modules[node.value.id], node.attr) for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules]


def test_a_missing_lib_function_is_found():
    assert lib_references("from lib import inputs\ninputs.make_dataset(1)\n") == [(2, "lib.inputs", "make_dataset")]


@pytest.mark.parametrize("benchmark", BENCHMARKS, ids=lambda path: path.name)
def test_every_lib_name_a_benchmark_uses_exists(benchmark):
    missing = [f"line {line}: {module}.{name}" for line, module, name in lib_references(benchmark.read_text())
               if not hasattr(importlib.import_module(module), name)]
    assert not missing, f"{benchmark.name} uses names lib no longer has: {missing}"


def test_every_finetune_ablation_variant_is_valid_params_and_the_recipe_row_is_the_recipe_file():
    import sys

    from lib import params

    sys.path.insert(0, str(BENCHMARKS[0].parent))
    import finetune_ablation

    def load(recipe, overrides):  # without the shared data and weights, which a fresh clone does not have
        return params.load(BENCHMARKS[0].parents[1] / recipe, ["model.weights=null", *overrides], name="variant")

    loaded = {name: load(recipe, overrides) for name, (recipe, overrides, _) in finetune_ablation.VARIANTS.items()}
    assert loaded["recipe"] == load(finetune_ablation.FINETUNE, [])
    # measured before the recipe applied its augmentation as one affine map, and reproduced as measured
    assert loaded["22_epochs"] == load(finetune_ablation.FINETUNE, ["train.augmentation.one_resampling=false"])


def test_validation_choices_decides_as_notebook_04_without_reading_the_test_split(trained_run, tmp_path):
    import shutil
    import sys

    from lib import artifacts, evaluation, params

    sys.path.insert(0, str(BENCHMARKS[0].parent))
    import validation_choices

    run_dir = shutil.copytree(trained_run[0], tmp_path / "run")
    run_params = params.load(BENCHMARKS[0].parents[1] / "params" / "demo.yaml",
                             ["data.image_size=32", "evaluate.tta=auto", "evaluate.class_bias=on"])
    params.save(run_params, run_dir / "params.yaml")
    manifest = artifacts.read_manifest(run_dir)
    test_rows = manifest[manifest["split"] == "test"]
    for path in test_rows["abs_path"]:  # unreadable: the script must not need the test split
        Path(path).unlink()

    row = validation_choices.validation_choices(run_dir)

    classes = artifacts.class_names(run_dir)
    validation = evaluation.predict_split(trained_run[1], manifest[manifest["split"] == "validation"], 32,
                                          evaluation.views_needed("auto"))
    as_notebook_04 = evaluation.evaluate(validation, validation, classes, train_labels=validation.rows["label"],
                                         tta="auto", class_bias="on", n_resamples=0)
    chosen = as_notebook_04["tta"]["chosen"]
    assert row["views chosen"] == f"{chosen} ({evaluation.TTA_VIEWS[chosen]})"
    assert row["T"] == f"{as_notebook_04['temperature']['value']:.3f}"
    held_out = as_notebook_04["temperature"]["class_bias"]["cross_validation"]
    assert row["held-out without / with class biases"] == f"{held_out['without']:.3f} / {held_out['with']:.3f}"
    assert row["biases applied"] == "yes"
    with_8_views = evaluation.evaluate(validation, validation, classes, train_labels=validation.rows["label"],
                                       tta="dihedral", class_bias="on", n_resamples=0)
    held_out_8 = with_8_views["temperature"]["class_bias"]["cross_validation"]["with"]
    assert f"dihedral {held_out_8:.3f}, dihedral_45" in row["held-out with class biases, by views"]
    auto_scores = as_notebook_04["tta"]["held_out_balanced_accuracy"]
    assert row["held-out as auto chooses"] == ", ".join(f"{variant} {value:.3f}" for variant, value in auto_scores.items())
    orientations = as_notebook_04["tta"]["orientations"]["validation"]
    assert row["one view as stored"] == f"{orientations[0]:.3f}" and len(orientations) == 16


def split_difficulty_run(trained_run, tmp_path, resplit):
    """A copy of the trained run with params for its 32 px images; with `resplit`, its labels shuffled (so that the
    baseline scores neither 1.0 nor the same on every split) and its manifest split as notebook 02 splits it
    (`splits.split_records` under the run's split_seed)."""
    import shutil

    import numpy as np

    from lib import artifacts, params, splits

    run_dir = shutil.copytree(trained_run[0], tmp_path / "run")
    run_params = params.load(BENCHMARKS[0].parents[1] / "params" / "demo.yaml",
                             ["data.image_size=32", "data.validation_fraction=0.2", "data.test_fraction=0.2"])
    params.save(run_params, run_dir / "params.yaml")
    if resplit:
        manifest = artifacts.read_manifest(run_dir).drop(columns=["split", "abs_path"])
        manifest["label"] = np.random.default_rng(0).permutation(manifest["label"].to_numpy())
        artifacts.write_manifest(run_dir, splits.split_records(manifest, 0.2, 0.2, run_params.data.split_seed),
                                 extra_columns=("age", "sex", "localization"))
    return run_dir, run_params


def test_split_difficulty_scores_the_runs_own_split_as_the_ablation_baseline_does(trained_run, tmp_path):
    import sys

    import keras

    sys.path.insert(0, str(BENCHMARKS[0].parent))
    import finetune_ablation
    import split_difficulty

    run_dir, run_params = split_difficulty_run(trained_run, tmp_path, resplit=True)
    keras.utils.set_random_seed(0)  # the same random backbone for both: the demo's small CNN has no pretrained weights
    own_seed, scores = split_difficulty.split_scores(run_dir, range(3))
    keras.utils.set_random_seed(0)
    baseline = finetune_ablation.logistic_regression(run_dir)

    assert own_seed == run_params.data.split_seed and set(scores) == {own_seed, 0, 1, 2}
    assert scores[own_seed]["validation"] == pytest.approx(baseline["validation"]["balanced_accuracy"])
    assert scores[own_seed]["test"] == pytest.approx(baseline["test"]["balanced_accuracy"])
    assert len({(score["validation"], score["test"]) for score in scores.values()}) > 1
    summary, gap = split_difficulty.tables(run_dir, own_seed, scores)
    assert f"| validation | {scores[own_seed]['validation']:.3f} |" in summary and "3 other split seeds" in summary


def test_split_difficulty_refuses_a_run_whose_split_it_cannot_reproduce(trained_run, tmp_path):
    import sys

    sys.path.insert(0, str(BENCHMARKS[0].parent))
    import split_difficulty

    run_dir, _ = split_difficulty_run(trained_run, tmp_path, resplit=False)  # split by position, not split_records
    with pytest.raises(SystemExit, match="does not give its manifest's split"):
        split_difficulty.split_scores(run_dir, range(1))
