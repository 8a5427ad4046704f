"""Compare runs: one row per run folder under outputs/ with its recipe, the parameters that tell runs
apart and the main test metrics, printed and written as CSV and Markdown.

    python -m lib compare outputs/          # prints the table, writes outputs/comparison.{csv,md}
"""

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd

from lib import paths, report

logger = logging.getLogger(__name__)

# Always shown, so even a single run says what it was.
KEY_PARAMS = ("data.dataset", "data.labels", "data.image_size", "model.backbone", "train.epochs")
# Parameters that differ between runs by nature, not by choice.
IGNORED_PARAMS = ("name",)
# metrics.json keys shown, in order; melanoma and baselines are flattened below.
METRIC_COLUMNS = ("n_test", "accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "top3_accuracy")


def read_json(path):
    """The JSON file at `path` as a dict, or None when the file does not exist."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_metrics(metrics):
    """The comparison's metric columns from a metrics.json dict."""
    row = {key: metrics.get(key) for key in METRIC_COLUMNS}
    melanoma = metrics.get("melanoma") or {}
    row["melanoma_sensitivity"] = melanoma.get("sensitivity")
    row["melanoma_specificity"] = melanoma.get("specificity")
    row["majority_balanced_accuracy"] = ((metrics.get("baselines") or {}).get("majority") or {}).get(
        "balanced_accuracy")
    row["ece"] = (metrics.get("calibration") or {}).get("ece")
    return row


def recipe_of(run_dir, params):
    """The params file a run came from, as recorded by the runner in provenance.json, else its name."""
    provenance = read_json(Path(run_dir) / "provenance.json") or {}
    for key in ("params_file", "recipe", "params_path"):
        if provenance.get(key):
            return Path(str(provenance[key])).name
    return params.get("name")


def comparable(value):
    """A parameter value as a hashable, printable cell (lists and dicts as JSON)."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def compare_runs(outputs_dir):
    """One row per folder in `outputs_dir` holding a params.yaml, sorted by run folder name. Columns:
    run, name, recipe, status ("complete" with metrics.json, else "incomplete"), the KEY_PARAMS and every
    other parameter whose value differs between runs, then the main test metrics (empty when
    incomplete)."""
    outputs_dir = Path(outputs_dir)
    if not outputs_dir.is_dir():
        raise FileNotFoundError(f"outputs folder not found: {outputs_dir}; runs are made by "
                                "`python -m lib run params/<recipe>.yaml`")
    rows, flat_params = [], []
    for run_dir in sorted(path for path in outputs_dir.iterdir() if (path / "params.yaml").is_file()):
        params = report.read_params(run_dir)
        flat_params.append({name: comparable(value) for name, value in report.flatten_params(params).items()})
        metrics = read_json(run_dir / "metrics.json")
        rows.append({"run": run_dir.name, "name": params.get("name"), "recipe": recipe_of(run_dir, params),
                     "status": "complete" if metrics is not None else "incomplete",
                     **run_metrics(metrics or {})})
    if not rows:
        logger.warning("no run folder (with params.yaml) in %s", outputs_dir)
        return pd.DataFrame(columns=["run", "name", "recipe", "status", *KEY_PARAMS, *METRIC_COLUMNS])
    params_table = pd.DataFrame(flat_params)
    differing = [name for name in params_table.columns
                 if name not in IGNORED_PARAMS and params_table[name].astype(str).nunique(dropna=False) > 1]
    shown = [name for name in KEY_PARAMS if name in params_table.columns]
    shown += sorted(name for name in differing if name not in shown)
    table = pd.DataFrame(rows)
    return pd.concat([table[["run", "name", "recipe", "status"]], params_table[shown],
                      table.drop(columns=["run", "name", "recipe", "status"])], axis=1)


def write_comparison(table, out_dir):
    """Write `table` to out_dir/comparison.csv and out_dir/comparison.md; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, markdown_path = out_dir / "comparison.csv", out_dir / "comparison.md"
    table.to_csv(csv_path, index=False)
    rounded = table.round(3).set_index("run")
    markdown_path.write_text("# Run comparison\n\n" + report.markdown_table(rounded) + "\n", encoding="utf-8")
    logger.info("wrote %s and %s", csv_path, markdown_path)
    return csv_path, markdown_path


def main(argv=None):
    """CLI: `python -m lib compare [outputs_dir] [--out DIR]`; `argv` excludes the `compare` word.
    Prints the table and writes it as CSV/Markdown; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m lib compare", description=__doc__.splitlines()[0])
    parser.add_argument("outputs_dir", nargs="?", default="outputs", help="folder of run folders [outputs]")
    parser.add_argument("--out", default=None, help="where to write comparison.csv/.md [outputs_dir]")
    arguments = parser.parse_args(argv)
    outputs_dir = paths.resolve(arguments.outputs_dir)
    if not outputs_dir.is_dir():
        print(f"error: outputs folder not found: {outputs_dir}; runs are made by "
              "`python -m lib run params/<recipe>.yaml`", file=sys.stderr)
        return 1
    table = compare_runs(outputs_dir)
    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(table.to_string(index=False))
    csv_path, markdown_path = write_comparison(table, paths.resolve(arguments.out or outputs_dir))
    print(f"\nwrote {csv_path} and {markdown_path}")
    return 0
