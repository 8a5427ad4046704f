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
