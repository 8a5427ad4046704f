"""Recipe A on real data through the real pipeline: MobileNet alpha 0.75 (ImageNet weights from a local
file) on the HAM10000-layout folder, lesion-aware split; then the same run with `model.weights: null`,
to show what pretraining buys. Reports test accuracy, balanced accuracy, macro ROC AUC, melanoma
recall (from metrics.json) and training wall time (training.json).

    .venv/bin/python benchmarks/recipe_a_real_data.py --epochs 5           # both runs, ~30 min on 2 cores
    .venv/bin/python benchmarks/recipe_a_real_data.py --epochs 5 --variants pretrained,scratch,scratch_all_layers
    .venv/bin/python benchmarks/recipe_a_real_data.py --report-only        # re-read finished runs

Each run is `python -m lib run params/ham10000_mobilenet.yaml --name bench_recipe_a[_scratch] ...`
(all five notebooks), its log in <outputs>/<name>.log. A finished run folder is reused, not rerun.
There is no speed floor here; the script exits non-zero when a run fails, or when the pretrained
model does not beat the from-scratch one on balanced accuracy (that would mean the weights file is
not being loaded).
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

RECIPE = "params/ham10000_mobilenet.yaml"
# variant: (run name, model.weights, extra overrides)
VARIANTS = {"pretrained": ("bench_recipe_a", str(common.MOBILENET_WEIGHTS), []),
            "scratch": ("bench_recipe_a_scratch", "null", []),
            # with weights null, the recipe's trainable_layers 23 leaves most of the net frozen at random
            # values; this variant trains every layer, the fair "no pretraining" comparison
            "scratch_all_layers": ("bench_recipe_a_scratch_all", "null", ["model.trainable_layers=-1"])}


def overrides(weights, epochs, limit, learning_rate):
    values = ["data.source=local", f"data.path={common.HAM10000_DIR}", "model.alpha=0.75",
              f"model.weights={weights}", f"train.epochs={epochs}"]
    if limit:
        values.append(f"data.limit={limit}")
    if learning_rate is not None:
        values.append(f"train.learning_rate={learning_rate}")
    return values


def command(name, outputs, values):
    arguments = [common.PYTHON, "-m", "lib", "run", RECIPE, "--name", name, "--outputs", str(outputs)]
    for value in values:
        arguments += ["-p", value]
    return arguments


def finished(run_dir):
    progress = Path(run_dir) / "progress.json"
    return progress.is_file() and "04_evaluate" in json.loads(progress.read_text())


def read_row(variant, run_dir, pipeline_seconds=None):
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    training = json.loads((run_dir / "training.json").read_text())
    progress = json.loads((run_dir / "progress.json").read_text())
    export = json.loads((run_dir / "export.json").read_text()) if (run_dir / "export.json").is_file() else {}
    counts = json.loads((run_dir / "data" / "counts.json").read_text()) if (run_dir / "data" / "counts.json").is_file() else {}
    return {"weights": variant, "run": run_dir.name,
            "train/val/test images": f"{training['train_images']}/{training['validation_images']}/{metrics['n_test']}",
            "epochs": training["epochs_run"], "best epoch": training["best_epoch"],
            "accuracy": metrics["accuracy"], "balanced accuracy": metrics["balanced_accuracy"],
            "macro AUC": metrics["roc_auc"], "top-3 accuracy": metrics.get("top3_accuracy"),
            "melanoma recall": metrics["melanoma"]["sensitivity"],
            "train wall s": training["wall_time_seconds"],
            "s/epoch": training["wall_time_seconds"] / max(1, training["epochs_run"]),
            "notebooks s": round(sum(entry["seconds"] for entry in progress.values()), 1),
            "majority balanced acc": metrics["baselines"]["majority"]["balanced_accuracy"],
            "export": {option: result["size_bytes"] for option, result in export.get("options", {}).items()},
            "export_note": export_note(progress, export), "_counts": counts}


def export_note(progress, export):
    """None when notebook 05 finished; else what export.json says about the failed conversion."""
    if "05_convert_tfjs" in progress:
        return None
    parts = []
    for option, result in export.get("options", {}).items():
        parity = result.get("parity", {})
        if parity.get("measured"):
            parts.append(f"{option}: {result['size_bytes'] / 2**20:.1f} MB, browser top-1 agreement "
                         f"{parity['top1_agreement']:.2f}, max abs diff {parity['max_abs_diff']:.2g}"
                         f"{'' if parity.get('passes') else ' (misses its floor)'}")
    return "notebook 05_convert_tfjs did not finish" + (f"; export.json: {'; '.join(parts)}" if parts else "")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None, help="data.limit (default: all images)")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the recipe's 0.01")
    parser.add_argument("--outputs", default=str(common.PROJECT_ROOT / "outputs"))
    parser.add_argument("--variants", default="pretrained,scratch")
    parser.add_argument("--report-only", action="store_true", help="only read finished run folders")
    parser.add_argument("--no-results", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args(argv)
    if not common.HAM10000_DIR.is_dir():
        print(f"no data at {common.HAM10000_DIR} (set BENCH_HAM10000): not measured")
        return 2
    outputs = Path(args.outputs)
    outputs.mkdir(parents=True, exist_ok=True)
    rows, failures, commands = [], [], []
    for variant in args.variants.split(","):
        name, weights, extra = VARIANTS[variant]
        values = overrides(weights, args.epochs, args.limit, args.learning_rate) + extra
        arguments = command(name, outputs, values)
        commands.append(" ".join(arguments[1:]))
        run_dir = outputs / name
        if not finished(run_dir) and not args.report_only:
            if run_dir.exists():
                arguments.append("--resume")
            print("running:", " ".join(arguments), flush=True)
            result = common.run_measured(arguments, log_path=outputs / f"{name}.log")
            if result["returncode"] != 0:
                print(result["output"][-3000:])
                if not finished(run_dir):  # a failure after 04_evaluate still leaves the metrics
                    failures.append(f"{variant}: exit {result['returncode']}, see {outputs / f'{name}.log'}")
                    continue
        if finished(run_dir):
            rows.append(read_row(variant, run_dir))
        else:
            failures.append(f"{variant}: {run_dir} has not finished")
    columns = ["weights", "train/val/test images", "epochs", "best epoch", "accuracy", "balanced accuracy",
               "macro AUC", "top-3 accuracy", "melanoma recall", "train wall s", "s/epoch", "notebooks s",
               "majority balanced acc"]
    table = common.markdown_table(rows, columns)
    print(table)
    checks = []
    by_variant = {row["weights"]: row for row in rows}
    for other in ("scratch", "scratch_all_layers"):
        if {"pretrained", other} <= by_variant.keys():
            gain = by_variant["pretrained"]["balanced accuracy"] - by_variant[other]["balanced accuracy"]
            checks.append((f"pretrained beats {other} on balanced accuracy", gain > 0, f"{gain:+.3f}"))
    lr = args.learning_rate if args.learning_rate is not None else "0.01 (the recipe's, kept)"
    markdown = "\n".join([
        "## 4. Recipe A on real data (MobileNet alpha 0.75, HAM10000 layout, lesion-aware split)",
        "",
        f"Measured {common.machine_line()}.",
        "",
        "Reproduce (the runs, then the table; a finished run folder is reused): "
        f"`.venv/bin/python benchmarks/recipe_a_real_data.py --epochs {args.epochs} --variants {args.variants}"
        f"{f' --limit {args.limit}' if args.limit else ''}"
        f"{f' --learning-rate {args.learning_rate}' if args.learning_rate is not None else ''}`, which runs:",
        "",
        *[f"    .venv/bin/python {line}" for line in commands],
        "",
        "Variants: `pretrained` = the local ImageNet weights file; `scratch` = `model.weights: null` with the "
        "recipe otherwise unchanged (so only the last 23 layers train and the rest stay at random values); "
        "`scratch_all_layers` = `model.weights: null` with every layer trainable (the fair no-pretraining run). "
        f"Changed from the recipe, to fit ~25 min per run on 2 shared cores: alpha 0.75 instead of 1.0 (the local "
        f"weights file), train.epochs {args.epochs} instead of 30; learning rate {lr}. "
        "Everything else is params/ham10000_mobilenet.yaml: last 23 layers trainable, augmentation, mel weight 3, "
        "ReduceLROnPlateau on val top-3 accuracy. Metrics are on the test split (15% of lesions), from metrics.json; "
        "`melanoma recall` is metrics.json's melanoma sensitivity; `train wall s` is training.json's wall time of "
        "notebook 03's train() call; `notebooks s` is all five notebooks.",
        "",
        table,
        "",
        *[f"- {name}: {'PASS' if ok else 'FAIL'} ({detail})" for name, ok, detail in checks],
        *[f"- run failed: {failure}" for failure in failures],
        *[f"- {row['weights']}: {row['export_note']}" for row in rows if row["export_note"]],
    ])
    if not args.no_results:
        common.update_results("recipe_a", markdown)
    for row in rows:
        print(row["weights"], "export sizes (bytes):", row["export"])
    return 1 if failures or not all(ok for _, ok, _ in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
