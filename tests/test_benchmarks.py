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
