"""How typical is a run's split? The logistic-regression baseline re-fitted on other random splits of the same images.

A run's validation and test splits are one draw of ~900 images each, with a handful of the rare classes (9 df, 12 vasc
in HAM10000's shared folder), so how hard they are is itself a random quantity. This re-splits the run's images the way
notebook 02 does (`splits.split_records`: by lesion, stratified by class, the run's fractions) under other
`data.split_seed`s, fits finetune_ablation's baseline (class-balanced logistic regression on the frozen ImageNet
backbone's features, C chosen on validation) on each, and reports where the run's own split falls among them. It
reads the test labels only for that baseline, as finetune_ablation.py's baseline row does; no trained model is used.

    .venv/bin/python benchmarks/split_difficulty.py /work/runs/recipe-seed44 [--splits 40]

Prints two markdown tables; writes nothing but the features' cache in the run folder (one backbone pass).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import finetune_ablation  # noqa: E402

sys.path.insert(0, str(common.PROJECT_ROOT))
from lib import artifacts, params, splits  # noqa: E402

SPLITS = ("validation", "test")


def baseline_scores(features, labels, split):
    """Validation and test balanced accuracy of the baseline on one split (C chosen on validation)."""
    features, labels = ({name: values[split == name] for name in ("train", *SPLITS)} for values in (features, labels))
    _, classifier = finetune_ablation.chosen_probe(features, labels)
    return {name: balanced_accuracy_score(labels[name], classifier.predict(features[name])) for name in SPLITS}


def split_scores(run_dir, split_seeds):
    """{split_seed: {"validation", "test"}} for the run's own split seed and `split_seeds`."""
    data = params.load_run(run_dir).data
    manifest = artifacts.read_manifest(run_dir)
    features = finetune_ablation.frozen_features(run_dir, {"all": manifest["abs_path"]})["all"]
    labels = manifest["label"].to_numpy()
    scores = {}
    for seed in [data.split_seed, *(seed for seed in split_seeds if seed != data.split_seed)]:
        split = splits.split_records(manifest.drop(columns="split"), data.validation_fraction, data.test_fraction,
                                     seed)["split"].to_numpy()
        if seed == data.split_seed and not np.array_equal(split, manifest["split"].to_numpy()):
            raise SystemExit(f"re-splitting {run_dir} with its split_seed {seed} does not give its manifest's split "
                             "(made by another version of lib.splits?): the comparison would not be about its split")
        scores[seed] = baseline_scores(features, labels, split)
    return data.split_seed, scores


def tables(run_dir, own_seed, scores):
    """The run's split beside the others: mean, spread, percentiles and the run's rank, per split; then the gap
    between validation and test."""
    own, others = scores[own_seed], [score for seed, score in scores.items() if seed != own_seed]
    summary = []
    for name in SPLITS:
        values = np.array([score[name] for score in others])
        summary.append({"split": name, f"split_seed {own_seed} (this run)": f"{own[name]:.3f}",
                        f"{len(values)} other split seeds: mean ± sd": f"{values.mean():.3f} ± {values.std(ddof=1):.3f}",
                        "5th / 50th / 95th percentile": " / ".join(f"{v:.3f}" for v in np.percentile(values, [5, 50, 95])),
                        "other splits below this run's": f"{(values < own[name]).mean():.0%}"})
    gaps = np.array([score["validation"] - score["test"] for score in others])
    gap = [{"run": Path(run_dir).name, "validation - test, this run's split": f"{own['validation'] - own['test']:+.3f}",
            "validation - test, other splits: mean ± sd": f"{gaps.mean():+.3f} ± {gaps.std(ddof=1):.3f}"}]
    return common.markdown_table(summary, list(summary[0])), common.markdown_table(gap, list(gap[0]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder with notebook 02 done (its images and manifest)")
    parser.add_argument("--splits", type=int, default=40, help="other split seeds to draw: 0 .. N-1 (default 40)")
    arguments = parser.parse_args()
    own_seed, scores = split_scores(arguments.run, range(arguments.splits))
    for table in tables(arguments.run, own_seed, scores):
        print(table + "\n")


if __name__ == "__main__":
    main()
