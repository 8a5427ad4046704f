"""Compare runs: one row per run folder under outputs/ with its recipe, the parameters that tell runs apart and the
main test metrics with their 95% intervals, grouped by the test set they were measured on; then one row per seed
sweep (`python -m lib sweep`) with the mean and standard deviation of each metric over its runs. Printed, and
written as CSV and Markdown.

    python -m lib compare outputs/          # prints the tables, writes outputs/comparison.{csv,md}, sweeps.csv

Runs whose metrics.json describes an older model (an earlier notebook ran again since) are marked stale, and runs
tested on another set of images than the others are marked too: neither compares with the rest.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd

from lib import artifacts, paths, report
from lib import params as params_lib

logger = logging.getLogger(__name__)

# Always shown, so even a single run says what it was.
KEY_PARAMS = ("data.dataset", "data.labels", "data.image_size", "model.backbone", "train.epochs")
# Parameters that differ between runs by nature, not by choice.
IGNORED_PARAMS = ("name",)
# metrics.json keys shown as they are, in order.
METRIC_COLUMNS = ("n_test", "accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "top3_accuracy")
# Metrics shown with their bootstrap interval (a "<metric>_ci" column): column -> bootstrap.intervals key.
INTERVAL_COLUMNS = {"balanced_accuracy": "balanced_accuracy", "roc_auc": "roc_auc",
                    "melanoma_sensitivity": "melanoma_sensitivity",
                    "screening_sensitivity": "operating_point_sensitivity"}
# Numeric columns a sweep averages over its runs.
AGGREGATED = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "top3_accuracy", "val_balanced_accuracy",
              "melanoma_sensitivity", "melanoma_specificity", "screening_sensitivity", "screening_specificity", "ece")
# A seed sweep's record beside its runs: outputs/<name>-sweep.json (written by lib.sweep).
SWEEP_SUFFIX = "-sweep.json"
# Shown in the CSV only: too long for the printed table (the warnings repeat them).
CSV_ONLY = ("stale_reason", "test_set_sha256")


def run_metrics(metrics):
    """The comparison's metric columns from a metrics.json dict (empty cells for keys it lacks)."""
    row = {key: metrics.get(key) for key in METRIC_COLUMNS}
    row["test_set_sha256"] = (metrics.get("test_set") or {}).get("sha256")
    row["test_set"] = row["test_set_sha256"][:8] if row["test_set_sha256"] else None
    row["val_balanced_accuracy"] = (metrics.get("validation") or {}).get("balanced_accuracy")
    melanoma = metrics.get("melanoma") or {}
    row["melanoma_sensitivity"] = melanoma.get("sensitivity")
    row["melanoma_specificity"] = melanoma.get("specificity")
    point = (metrics.get("operating_point") or {}).get("test") or {}
    row["screening_sensitivity"] = (point.get("sensitivity") or {}).get("value")
    row["screening_specificity"] = (point.get("specificity") or {}).get("value")
    row["tta"] = (metrics.get("tta") or {}).get("chosen")
    row["temperature"] = (metrics.get("temperature") or {}).get("value")
    class_bias = (metrics.get("temperature") or {}).get("class_bias")
    row["class_bias"] = None if class_bias is None else class_bias["applied"]
    row["ece"] = (metrics.get("calibration") or {}).get("ece")
    row["majority_balanced_accuracy"] = ((metrics.get("baselines") or {}).get("majority") or {}).get(
        "balanced_accuracy")
    intervals = (metrics.get("bootstrap") or {}).get("intervals") or {}
    for column, key in INTERVAL_COLUMNS.items():
        row[f"{column}_ci"] = report.interval(intervals.get(key)) or None
    return row


def run_status(run_dir, metrics):
    """(status, stale reason): complete, stale (metrics.json describes an older model: an earlier notebook ran
    again after 04_evaluate) or incomplete (no metrics.json)."""
    if metrics is None:
        return "incomplete", None
    reason = artifacts.stale_reason(run_dir, "04_evaluate")
    return ("stale", reason) if reason else ("complete", None)


def recipe_of(run_dir, params):
    """The params file a run came from, as recorded by the runner in provenance.json, else its name."""
    provenance = artifacts.read_json(Path(run_dir) / "provenance.json", missing={})
    for key in ("params_file", "recipe", "params_path"):
        if provenance.get(key):
            return Path(str(provenance[key])).name
    return params.get("name")


def comparable(value):
    """A parameter value as a hashable, printable cell (lists and dicts as JSON)."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def run_folders(outputs_dir):
    """The run folders (holding a params.yaml) in `outputs_dir`, by name."""
    return sorted(path for path in Path(outputs_dir).iterdir() if (path / "params.yaml").is_file())


def compare_runs(outputs_dir):
    """One row per run folder in `outputs_dir`: run, name, recipe, status (`run_status`), the KEY_PARAMS and every
    other parameter whose value differs between runs, then the test metrics (`run_metrics`; empty when
    incomplete) and `different_test_set` (tested on other images than the largest group of runs). Rows are
    grouped by test set, the largest group first, then sorted by run."""
    outputs_dir = Path(outputs_dir)
    if not outputs_dir.is_dir():
        raise FileNotFoundError(f"outputs folder not found: {outputs_dir}; runs are made by "
                                "`python -m lib run params/<recipe>.yaml`")
    rows, flat_params = [], []
    for run_dir in run_folders(outputs_dir):
        params = params_lib.read_run_mapping(run_dir)
        flat_params.append({name: comparable(value) for name, value in report.flatten_params(params).items()})
        metrics = artifacts.read_json(run_dir / artifacts.METRICS)
        status, reason = run_status(run_dir, metrics)
        rows.append({"run": run_dir.name, "name": params.get("name"), "recipe": recipe_of(run_dir, params),
                     "status": status, "stale_reason": reason, **run_metrics(metrics or {})})
    if not rows:
        logger.warning("no run folder (with params.yaml) in %s", outputs_dir)
        return pd.DataFrame(columns=["run", "name", "recipe", "status", *KEY_PARAMS, *METRIC_COLUMNS])
    params_table = pd.DataFrame(flat_params)
    differing = [name for name in params_table.columns
                 if name not in IGNORED_PARAMS and params_table[name].astype(str).nunique(dropna=False) > 1]
    shown = [name for name in KEY_PARAMS if name in params_table.columns]
    shown += sorted(name for name in differing if name not in shown)
    runs = pd.DataFrame(rows)
    runs["n_test"] = runs["n_test"].astype("Int64")  # stays an integer beside incomplete runs
    table = pd.concat([runs[["run", "name", "recipe", "status"]], params_table[shown],
                       runs.drop(columns=["run", "name", "recipe", "status"])], axis=1)
    return group_by_test_set(table)


def group_by_test_set(table):
    """`table` with `different_test_set` (False for the largest group of runs tested on the same images, and for
    runs without a fingerprint), its rows ordered by test set group (largest first), then by run."""
    fingerprints = table["test_set_sha256"]
    sizes = fingerprints.value_counts()
    rank = fingerprints.map({sha: position for position, sha in enumerate(sizes.index)}).fillna(len(sizes))
    table = table.assign(different_test_set=(rank > 0) & fingerprints.notna(), group_rank=rank)
    return table.sort_values(["group_rank", "run"]).drop(columns="group_rank").reset_index(drop=True)


def comparison_warnings(table):
    """What a reader must know before comparing the rows: stale runs, and runs tested on another set."""
    messages = [f"{row.run} is stale: its metrics.json describes an older model ({row.stale_reason}); rerun "
                f"`python -m lib notebook <outputs>/{row.run} 04_evaluate`" for row in table.itertuples()
                if row.status == "stale"]
    if "different_test_set" in table and table["different_test_set"].any():
        others = ", ".join(f"{row.run} ({row.test_set})" for row in table.itertuples() if row.different_test_set)
        messages.append(f"tested on another set of images than {table['test_set'].iloc[0]}, so their metrics do "
                        f"not compare with the others: {others}")
    return messages


# ---- seed sweeps ----------------------------------------------------------------------------------------

def spread(values):
    """{"mean", "std" (sample, n - 1), "n"} of a pandas Series, missing values left out; None where undefined."""
    values = values.dropna()
    return {"mean": float(values.mean()) if len(values) else None,
            "std": float(values.std(ddof=1)) if len(values) > 1 else None, "n": int(len(values))}


def aggregate_runs(outputs_dir, runs):
    """Mean and standard deviation of each AGGREGATED metric over the complete (not stale) `runs` (folder names in
    `outputs_dir`): {"runs": [{"run", "status"}], "n_complete", "test_set" (the fingerprint when all complete runs
    share it, else None), "same_test_set", "metrics": {metric: {"mean", "std", "n"}}}. The standard deviation is
    the sample one (n - 1); None for fewer than two runs. "validation" holds the same of the trained runs' best
    validation value of `train.monitor` (training.json), for choosing between sweeps before any test split is read."""
    statuses, values, fingerprints, validation = [], [], set(), []
    for run in runs:
        run_dir = Path(outputs_dir) / run
        metrics = artifacts.read_json(run_dir / artifacts.METRICS) if run_dir.is_dir() else None
        status = run_status(run_dir, metrics)[0] if run_dir.is_dir() else "missing"
        statuses.append({"run": run, "status": status})
        training = artifacts.read_json(run_dir / artifacts.TRAINING) if run_dir.is_dir() else None
        if training and training.get("best_value") is not None and not artifacts.stale_reason(run_dir, "03_train"):
            validation.append((training["monitor"], training["best_value"]))
        if status == "complete":
            row = run_metrics(metrics)
            values.append({key: row[key] for key in AGGREGATED})
            fingerprints.add(row["test_set_sha256"])
    table = pd.DataFrame(values, columns=list(AGGREGATED)).astype(float)
    monitors = {monitor for monitor, _ in validation}
    best = pd.Series([value for _, value in validation] if len(monitors) == 1 else [], dtype=float)
    return {"runs": statuses, "n_complete": len(values),
            "validation": {"monitor": monitors.pop() if len(monitors) == 1 else None, **spread(best)},
            "test_set": next(iter(fingerprints)) if len(fingerprints) == 1 else None,
            "same_test_set": len(fingerprints) <= 1, "metrics": {key: spread(table[key]) for key in AGGREGATED}}


def compare_sweeps(outputs_dir):
    """One row per sweep record (<name>-sweep.json) in `outputs_dir`: sweep, seeds, complete (runs with current
    metrics of all runs), test_set (None when the runs were tested on different sets), and <metric>_mean /
    <metric>_std of each AGGREGATED metric, recomputed from the runs' metrics.json now."""
    rows = []
    for path in sorted(Path(outputs_dir).glob(f"*{SWEEP_SUFFIX}")):
        record = artifacts.read_json(path)
        summary = aggregate_runs(outputs_dir, record["runs"])
        row = {"sweep": record["name"], "seeds": " ".join(map(str, record["seeds"])),
               "complete": f"{summary['n_complete']}/{len(record['runs'])}",
               "test_set": summary["test_set"][:8] if summary["test_set"] else
               (None if summary["same_test_set"] else "different")}
        for key in AGGREGATED:
            row[f"{key}_mean"], row[f"{key}_std"] = summary["metrics"][key]["mean"], summary["metrics"][key]["std"]
        rows.append(row)
    return pd.DataFrame(rows)


# ---- output -----------------------------------------------------------------------------------------

def printable(table):
    """`table` for the terminal and Markdown: numbers rounded, CSV_ONLY columns and all-empty columns left out."""
    shown = table.drop(columns=[column for column in CSV_ONLY if column in table])
    return shown.dropna(axis=1, how="all").round(3)


def printable_sweeps(sweeps):
    """`compare_sweeps` for the terminal and Markdown: each metric as "mean ± std" (n/a where no run has it)."""
    def cell(mean, std):
        if pd.isna(mean):
            return "n/a"
        return f"{mean:.3f}" + ("" if pd.isna(std) else f" ± {std:.3f}")

    shown = sweeps[["sweep", "seeds", "complete", "test_set"]].copy()
    for key in AGGREGATED:
        if sweeps[f"{key}_mean"].notna().any():
            shown[key] = [cell(mean, std) for mean, std in zip(sweeps[f"{key}_mean"], sweeps[f"{key}_std"])]
    return shown


def write_comparison(table, out_dir, sweeps=None):
    """Write `table` to out_dir/comparison.csv, `sweeps` (if any rows) to out_dir/sweeps.csv, and both to
    out_dir/comparison.md; return the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "comparison.csv", out_dir / "comparison.md"]
    table.to_csv(written[0], index=False)
    text = "# Run comparison\n\n" + report.markdown_table(printable(table).set_index("run")) + "\n"
    warnings = comparison_warnings(table) if len(table) else []
    text += "".join(f"\n**Warning:** {message}\n" for message in warnings)
    if sweeps is not None and len(sweeps):
        written.append(out_dir / "sweeps.csv")
        sweeps.to_csv(written[-1], index=False)
        text += "\n## Seed sweeps (mean ± standard deviation over the runs)\n\n" + report.markdown_table(
            printable_sweeps(sweeps).set_index("sweep")) + "\n"
    written[1].write_text(text, encoding="utf-8")
    logger.info("wrote %s", ", ".join(map(str, written)))
    return written


def main(argv=None):
    """CLI: `python -m lib compare [outputs_dir] [--out DIR]`; `argv` excludes the `compare` word.
    Prints the tables and warnings and writes them as CSV/Markdown; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m lib compare", description=__doc__.splitlines()[0])
    parser.add_argument("outputs_dir", nargs="?", default="outputs", help="folder of run folders [outputs]")
    parser.add_argument("--out", default=None, help="where to write comparison.csv/.md [outputs_dir]")
    arguments = parser.parse_args(argv)
    outputs_dir = paths.resolve(arguments.outputs_dir)
    if not outputs_dir.is_dir():
        print(f"error: outputs folder not found: {outputs_dir}; runs are made by "
              "`python -m lib run params/<recipe>.yaml`", file=sys.stderr)
        return 1
    table, sweeps = compare_runs(outputs_dir), compare_sweeps(outputs_dir)
    with pd.option_context("display.max_columns", None, "display.width", 250):
        print(printable(table).to_string(index=False) if len(table) else "no runs")
        if len(sweeps):
            print("\nSeed sweeps (mean ± standard deviation over the runs):")
            print(printable_sweeps(sweeps).to_string(index=False))
    for message in comparison_warnings(table) if len(table) else []:
        print(f"warning: {message}", file=sys.stderr)
    written = write_comparison(table, paths.resolve(arguments.out or outputs_dir), sweeps)
    print(f"\nwrote {', '.join(map(str, written))}")
    return 0
