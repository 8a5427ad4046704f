"""Issue 17's ablation on real HAM10000: from recipe A as shipped to the recommended fine-tuning recipe, one change
at a time, every choice read on the VALIDATION split; then the final recipe over 3 seeds on the test split, beside
a scikit-learn logistic regression on the same frozen features (the baseline to beat).

    .venv/bin/python benchmarks/finetune_ablation.py                       # every variant, then the final seeds
    .venv/bin/python benchmarks/finetune_ablation.py --variants head_only,finetune_constant
    .venv/bin/python benchmarks/finetune_ablation.py --report-only         # re-read finished runs

Each variant is `python -m lib run RECIPE --until 03_train -p ...` on the shared data (ImageNet MobileNet 0.75 from
a local file), so it trains exactly as a user's run does and never reads the test split; its validation metrics
are computed here from the checkpoint. The final recipe's seeds run all five notebooks (`python -m lib sweep`),
whose metrics.json holds the test numbers. Finished run folders are reused, not rerun. The table goes to
benchmarks/RESULTS.md (section finetune_ablation).
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

sys.path.insert(0, str(common.PROJECT_ROOT))

FINETUNE = "params/ham10000_finetune.yaml"
RECIPE_A = "params/ham10000_mobilenet.yaml"
# variant: (recipe, overrides on top of the shared-data ones, what it shows)
VARIANTS = {
    "recipe_a_as_shipped": (RECIPE_A, ["train.epochs=5"],
                            "recipe A (Adam 0.01, last 23 layers, val top-3 checkpoint), 5 epochs"),
    "head_only": (FINETUNE, ["train.fine_tune_epochs=0", "train.epochs=30", "model.trainable_layers=0",
                             "train.augmentation={}", "train.schedule=constant", "train.optimizer=adam",
                             "train.label_smoothing=0"],
                  "head only on cached features, Adam 0.001 constant, balanced class weights, 30 epochs"),
    "finetune_constant": (FINETUNE, ["train.schedule=constant", "train.optimizer=adam", "train.label_smoothing=0"],
                          "+ fine-tuning every layer (BatchNorm frozen), Adam at a constant rate"),
    "finetune_schedule": (FINETUNE, [], "+ warm-up and cosine decay, AdamW, label smoothing 0.1"),
    "balanced_sampling": (FINETUNE, ["train.class_weight=null", "train.sampling=balanced"],
                          "imbalance by balanced sampling instead of class weights"),
    "focal_loss": (FINETUNE, ["train.class_weight=null", "train.loss=focal"],
                   "imbalance by focal loss (gamma 2) instead of class weights"),
    "bfloat16": (FINETUNE, ["train.mixed_precision=mixed_bfloat16"], "the recipe computed in bfloat16"),
}


def shared_overrides():
    return ["data.source=local", f"data.path={common.HAM10000_DIR}", "model.alpha=0.75",
            f"model.weights={common.MOBILENET_WEIGHTS}"]


def train_variant(name, outputs, recipe, overrides):
    """Run notebooks 01-03 of a variant (reusing a finished run folder); returns its run folder."""
    from lib import artifacts

    run_dir = Path(outputs) / f"ablation_{name}"
    if "03_train" in (artifacts.finished_steps(run_dir) if run_dir.is_dir() else []):
        return run_dir
    command = [common.PYTHON, "-m", "lib", "run", recipe, "--name", run_dir.name, "--outputs", str(outputs),
               "--until", "03_train"] + [argument for value in shared_overrides() + overrides
                                         for argument in ("-p", value)]
    if run_dir.is_dir():
        command.append("--resume")
    result = common.run_measured(command, log_path=Path(outputs) / f"{run_dir.name}.log")
    if result["returncode"] != 0:
        raise RuntimeError(f"{name} failed; see {Path(outputs) / f'{run_dir.name}.log'}")
    return run_dir


def validation_row(run_dir):
    """Validation metrics of a run's checkpoint: balanced accuracy, melanoma sensitivity, macro AUC, ECE, and
    the training wall time of notebook 03."""
    from lib import artifacts, evaluation, inputs, params

    p = params.load_run(run_dir)
    validation = artifacts.read_manifest(run_dir, split="validation")
    model = artifacts.load_model(run_dir)
    images = inputs.image_dataset(validation["abs_path"], [0] * len(validation), 1, p.data.image_size, 32)
    probabilities = model.predict(images.map(lambda x, y: x), verbose=0)
    metrics = evaluation.compute_metrics(validation["label"], probabilities, artifacts.class_names(run_dir))
    training = artifacts.read_json(Path(run_dir) / artifacts.TRAINING)
    return {"balanced accuracy": metrics["balanced_accuracy"], "melanoma sensitivity": metrics["melanoma"]["sensitivity"],
            "macro AUC": metrics["roc_auc"], "ECE": metrics["calibration"]["ece"],
            "training s": training["wall_time_seconds"], "best epoch": training["best_epoch"],
            "dtype": training["dtype_policy"]}


def logistic_regression_baseline(run_dir):
    """scikit-learn's class-balanced logistic regression on the frozen backbone's pooled features of `run_dir`
    (its C chosen on validation), scored on validation and test."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from lib import artifacts, evaluation, inputs, models, params

    p = params.load_run(run_dir)
    classes = artifacts.class_names(run_dir)
    extractor = models.feature_model(models.build_model(num_classes=len(classes), image_size=p.data.image_size,
                                                        backbone=p.model.backbone, alpha=p.model.alpha,
                                                        weights=p.model.weights, trainable_layers=0))
    features, labels = {}, {}
    for split in ("train", "validation", "test"):
        rows = artifacts.read_manifest(run_dir, split=split)
        features[split] = inputs.cached_features(extractor, Path(run_dir) / "features" / "baseline", split,
                                                 list(rows["abs_path"]), p.data.image_size)
        labels[split] = list(rows["label"])
    fits = {}
    for c in (0.01, 0.1, 1.0):
        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=3000))
        classifier.fit(features["train"], labels["train"])
        order = [list(classifier.classes_).index(name) for name in classes]
        scores = {split: evaluation.compute_metrics(labels[split], classifier.predict_proba(features[split])[:, order],
                                                    classes) for split in ("validation", "test")}
        fits[c] = scores
    best_c = max(fits, key=lambda c: fits[c]["validation"]["balanced_accuracy"])
    return best_c, fits[best_c]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    parser.add_argument("--outputs", default=str(common.PROJECT_ROOT / "outputs" / "benchmarks"))
    args = parser.parse_args(argv)
    if not (common.HAM10000_DIR / "HAM10000_metadata.csv").is_file() or not common.MOBILENET_WEIGHTS.is_file():
        print(f"the shared data or weights are missing ({common.HAM10000_DIR}, {common.MOBILENET_WEIGHTS})")
        return 2
    rows = []
    for name in args.variants.split(","):
        recipe, overrides, description = VARIANTS[name]
        started = time.monotonic()
        run_dir = train_variant(name, args.outputs, recipe, overrides)
        row = {"variant": name, "what": description, **validation_row(run_dir)}
        rows.append(row)
        print(json.dumps(row), f"({time.monotonic() - started:.0f} s)", flush=True)
    print(common.markdown_table(rows, list(rows[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
