"""Would the patient's age, sex and body site help a trained run's classifier? Measured on validation alone.

HAM10000 records each image's age, sex and body site, and the published classifier of issue 17's table uses them.
This adds them the cheapest way that needs no retraining: naive Bayes on the image model's probabilities,
log p(class | image) + w * sum over age band (`evaluation.AGE_BANDS`), sex and site of log p(value | class), the
likelihoods counted on the **training** split (Laplace smoothing, unseen values as their own category), then the
temperature and the class biases as notebook 04 fits them, scored on held-out validation images
(`evaluation.class_bias_cross_validation`).
w = 0 is the image model alone; w = 1 trusts the metadata as naive Bayes would; 0.5 halves its say.

    .venv/bin/python benchmarks/metadata_prior.py /work/runs/recipe-seed44 [more trained run folders ...]

Prints one markdown table; writes nothing. The test split stays unread.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special
from sklearn import metrics as skmetrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

sys.path.insert(0, str(common.PROJECT_ROOT))
from lib import artifacts, evaluation, params, statistics  # noqa: E402

METADATA = ("age", "sex", "localization")
WEIGHTS = (0.0, 0.5, 1.0)
COLUMNS = ["run", "views", "metadata weight", "balanced accuracy", "held-out without / with class biases",
           "macro AUC"]


def metadata_log_likelihood(train_rows, rows, classes, smoothing=1.0):
    """(N, C): sum over METADATA of log p(each row's value | class), counted on `train_rows`."""
    train_true = evaluation.label_indices(train_rows["label"], classes)
    total = np.zeros((len(rows), len(classes)))
    for column in METADATA:
        train_values = evaluation.subgroup_labels(train_rows, column)
        values = evaluation.subgroup_labels(rows, column)
        categories = sorted(set(train_values) | set(values))
        counts = pd.crosstab(train_true, train_values.to_numpy()).reindex(
            index=range(len(classes)), columns=categories, fill_value=0).to_numpy() + smoothing
        log_likelihood = np.log(counts / counts.sum(axis=1, keepdims=True))
        total += log_likelihood[:, [categories.index(value) for value in values]].T
    return total


def metadata_rows(run_dir):
    """The rows of one run: each view mode and metadata weight, scored on its validation split."""
    run_params = params.load_run(run_dir)
    classes = artifacts.class_names(run_dir)
    manifest = artifacts.read_manifest(run_dir)
    validation = evaluation.predict_split(artifacts.load_model(run_dir), manifest[manifest["split"] == "validation"],
                                          run_params.data.image_size, evaluation.TTA_VIEWS["dihedral"],
                                          batch_size=run_params.train.batch_size)
    true = evaluation.label_indices(validation.rows["label"], classes)
    prior = metadata_log_likelihood(manifest[manifest["split"] == "train"], validation.rows, classes)
    weights = evaluation.class_bias_weights(true, classes, run_params.train.class_weight)
    rows = []
    for views in ("off", "flips", "dihedral"):
        log_probabilities = np.log(np.maximum(validation.probabilities(views), np.finfo(np.float32).tiny))
        for weight in WEIGHTS:
            probabilities = special.softmax(log_probabilities + weight * prior, axis=1)
            scaled = statistics.apply_temperature(probabilities, statistics.fit_temperature(true, probabilities))
            held_out = evaluation.class_bias_cross_validation(true, scaled, weights)
            rows.append(dict(zip(COLUMNS, [Path(run_dir).name, views, weight,
                    f"{skmetrics.balanced_accuracy_score(true, scaled.argmax(axis=1)):.3f}",
                    f"{held_out['without']:.3f} / {held_out['with']:.3f}",
                    f"{evaluation.roc_auc(true, scaled, classes)[0]:.3f}"])))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="trained run folders (notebook 03 done)")
    arguments = parser.parse_args()
    print(common.markdown_table([row for run in arguments.runs for row in metadata_rows(run)], COLUMNS))


if __name__ == "__main__":
    main()
