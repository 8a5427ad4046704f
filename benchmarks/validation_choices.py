"""What notebook 04 would decide for trained runs, on their validation split alone (the test split stays unread):
how much one view's score owes to the orientation the checkpoint was chosen on, which test-time augmentation
`evaluate.tta` takes, the temperature, and whether `evaluate.class_bias` applies the class biases, with the
held-out validation balanced accuracy that decides it, and that score for the flips, the 8 and the 16 views alike
(with class biases, `tta: auto` chooses the views on these held-out scores). This is how RESULTS.md section 7
compares variants of the recipe "as notebook 04 scores them" without reading their test splits.

    .venv/bin/python benchmarks/validation_choices.py outputs/ham10000_finetune [more run folders ...]

Each run's own params.yaml says its image size and decision modes; `--tta auto --class-bias auto` shows what the
recipe's modes would take for a run made with others. All 16 views of every validation image are predicted
(~3-4 minutes a run on 2 CPU cores). Prints one markdown table; writes nothing.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

sys.path.insert(0, str(common.PROJECT_ROOT))
from lib import artifacts, evaluation, params, registry  # noqa: E402

COLUMNS = ["run", "best epoch", "one view as stored", "one view over the orientations (min-max)",
           "views: balanced accuracy", "views chosen", "T", "held-out without / with class biases",
           "biases applied", "held-out with class biases, by views", "held-out as auto chooses"]


def validation_choices(run_dir, tta=None, class_bias=None):
    """The row of a trained run folder: {column of COLUMNS: value}."""
    run_params = params.load_run(run_dir)
    tta = tta or run_params.evaluate.tta
    class_bias = class_bias or run_params.evaluate.class_bias
    classes = artifacts.class_names(run_dir)
    manifest = artifacts.read_manifest(run_dir)
    validation = evaluation.predict_split(artifacts.load_model(run_dir), manifest[manifest["split"] == "validation"],
                                          run_params.data.image_size, max(evaluation.TTA_VIEWS.values()),
                                          batch_size=run_params.train.batch_size)
    if validation is None:
        raise SystemExit(f"{run_dir} has no validation split to decide on")
    decisions = evaluation.validation_decisions(validation, classes, tta, class_bias, run_params.train.class_weight)
    choice, temperature, bias = decisions["tta"], decisions["temperature"], decisions["class_bias"]
    by_views = {views: evaluation.validation_decisions(validation, classes, views, "on", run_params.train.class_weight)
                ["class_bias"]["cross_validation"] for views in ("flips", "dihedral", "dihedral_45")}
    orientations = choice["orientations"]["validation"]
    held_out = (bias or {}).get("cross_validation")
    training = artifacts.read_json(Path(run_dir) / artifacts.TRAINING, missing={})
    return dict(zip(COLUMNS, [Path(run_dir).name, training.get("best_epoch"), f"{orientations[0]:.3f}",
            f"{np.mean(orientations):.3f} ({min(orientations):.3f}-{max(orientations):.3f})",
            ", ".join(f"{variant} {value:.3f}" for variant, value in choice["validation_balanced_accuracy"].items()),
            f"{choice['chosen']} ({choice['views']})", f"{temperature:.3f}",
            None if held_out is None else f"{held_out['without']:.3f} / {held_out['with']:.3f}",
            None if bias is None else ("yes" if bias["applied"] else "no"),
            ", ".join(f"{views} {scores['with']:.3f}" for views, scores in by_views.items() if scores),
            ", ".join(f"{variant} {value:.3f}" for variant, value in (choice["held_out_balanced_accuracy"] or {}).items()
                      if value is not None) or None]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="trained run folders (notebook 03 done)")
    parser.add_argument("--tta", choices=registry.TTA_MODES, help="instead of each run's evaluate.tta")
    parser.add_argument("--class-bias", choices=registry.CLASS_BIAS_MODES,
                        help="instead of each run's evaluate.class_bias")
    arguments = parser.parse_args()
    rows = [validation_choices(run, arguments.tta, arguments.class_bias) for run in arguments.runs]
    print(common.markdown_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
