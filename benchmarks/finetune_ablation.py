"""Issue 17's ablation on real HAM10000: from recipe A as shipped to the recommended fine-tuning recipe
(params/ham10000_finetune.yaml), one change at a time, every choice read on the VALIDATION split; then the
recommended recipe over 3 seeds on the test split, beside a scikit-learn logistic regression on the same frozen
features (the baseline to beat).

    .venv/bin/python benchmarks/finetune_ablation.py                     # every variant, then 3 seeds (~12 h, 2 cores)
    .venv/bin/python benchmarks/finetune_ablation.py --variants head_only,recipe --seeds 0
    .venv/bin/python benchmarks/finetune_ablation.py --variants recipe --seeds 0   # finished runs: only the table

Each variant is `python -m lib run RECIPE --until 03_train -p ...` on the shared data (ImageNet MobileNet 0.75 from a
local file): it trains exactly as a user's run does and never reads the test split; its validation metrics are
computed here from its checkpoint (single view, as the web page runs it). The seeds are `python -m lib sweep` over
the recipe, all five notebooks, whose metrics.json holds the test numbers (and the validation choices of TTA and
temperature). Finished run folders are reused, not rerun. The tables go to benchmarks/RESULTS.md
(section finetune_ablation).
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

sys.path.insert(0, str(common.PROJECT_ROOT))

FINETUNE = "params/ham10000_finetune.yaml"
RECIPE_A = "params/ham10000_mobilenet.yaml"
# variant: (recipe, overrides on top of the shared-data ones, what it shows); the order of the table
# The recipe balances classes by sampling, weighs melanoma 1.5x, validates the weights' moving average, and fine-tunes
# 22 epochs at 1e-4 with rotation by any angle and zoom, applied with the flips as one affine map. The variants up to
# moving_average undo part of that and fine-tune at 2e-5 with right-angle views only (the recipe until rotation and
# zoom were measured); rate_1e-4, rotation_zoom_24_epochs and 22_epochs lead from there to the recipe; those after it
# were tried and not adopted. All but the recipe (and bfloat16) were measured before it applied its augmentation as
# one affine map, so they keep two resamplings (the layers one after another): the numbers measured stay reproducible
CLASS_WEIGHTS = ["train.sampling=shuffle", "train.class_weight=balanced"]
SIXTEEN_EPOCHS = ["train.fine_tune_epochs=16", "train.ema_momentum=null"]
PREVIOUS_RATE = ["train.fine_tune_learning_rate=0.00002", "train.warmup_epochs=1"]
RIGHT_ANGLES_AT_2E_5 = [*PREVIOUS_RATE, "train.fine_tune_epochs=24", "train.augmentation.rotation_range=0",
                        "train.augmentation.zoom_range=0", "train.augmentation.fill_mode=nearest"]
COLOUR = ["train.augmentation.brightness=0.1", "train.augmentation.contrast=0.1", "train.augmentation.saturation=0.1",
          "train.augmentation.hue=0.02"]


def warmed_up_rate(rate):
    """Overrides for a higher fine-tuning rate, reached over a 2-epoch warm-up instead of 1."""
    return [f"train.fine_tune_learning_rate={rate}", "train.warmup_epochs=2"]


VARIANTS = {
    "recipe_a_as_shipped": (RECIPE_A, ["train.epochs=5"],
                            "recipe A as shipped (Adam 0.01, last 23 layers, val top-3 checkpoint), 5 epochs"),
    "head_only": (FINETUNE, [*RIGHT_ANGLES_AT_2E_5, *CLASS_WEIGHTS, "train.fine_tune_epochs=0",
                             "train.ema_momentum=null", "train.epochs=30", "model.trainable_layers=0",
                             "train.augmentation.horizontal_flip=false", "train.augmentation.vertical_flip=false",
                             "train.augmentation.rotate90=false", "train.schedule=constant", "train.optimizer=adam",
                             "train.label_smoothing=0"],
                  "only the head, on cached features: Adam 0.001, balanced class weights, 30 epochs"),
    "finetune_constant": (FINETUNE, [*RIGHT_ANGLES_AT_2E_5, *SIXTEEN_EPOCHS, *CLASS_WEIGHTS, "train.schedule=constant",
                                     "train.optimizer=adam", "train.label_smoothing=0"],
                          "+ fine-tuning every layer (BatchNorm frozen) 16 epochs at 2e-5 with flips and right-angle "
                          "rotations, Adam at a constant rate"),
    "class_weights": (FINETUNE, [*RIGHT_ANGLES_AT_2E_5, *SIXTEEN_EPOCHS, *CLASS_WEIGHTS],
                      "+ warm-up and cosine decay, AdamW, label smoothing 0.1"),
    "focal_loss": (FINETUNE, [*RIGHT_ANGLES_AT_2E_5, *SIXTEEN_EPOCHS, "train.sampling=shuffle",
                              "train.class_weight=null", "train.loss=focal"],
                   "imbalance by focal loss (gamma 2) instead of class weights"),
    "balanced_sampling": (FINETUNE, [*RIGHT_ANGLES_AT_2E_5, *SIXTEEN_EPOCHS, "train.class_weight=null"],
                          "imbalance by balanced sampling instead of class weights"),
    "melanoma_weight": (FINETUNE, [*RIGHT_ANGLES_AT_2E_5, *SIXTEEN_EPOCHS],
                        "balanced sampling, and melanoma's loss weighed 1.5x"),
    "colour_augmentation": (FINETUNE, [*RIGHT_ANGLES_AT_2E_5, *SIXTEEN_EPOCHS, *CLASS_WEIGHTS, *COLOUR],
                            "class weights + brightness, contrast, saturation +-10%, hue +-2%"),
    "24_epochs": (FINETUNE, [*RIGHT_ANGLES_AT_2E_5, "train.ema_momentum=null"], "+ 24 fine-tuning epochs instead of 16"),
    "moving_average": (FINETUNE, RIGHT_ANGLES_AT_2E_5,
                       "+ the weights' moving average (0.998 a step) validated and saved"),
    "rate_1e-4": (FINETUNE, [*RIGHT_ANGLES_AT_2E_5, *warmed_up_rate("0.0001")],
                  "+ fine-tuning at 1e-4 (5x) with a 2-epoch warm-up"),
    "rotation_zoom_24_epochs": (FINETUNE, ["train.fine_tune_epochs=24"],
                                "+ rotation by any angle and +-15% zoom (borders reflected); over the 30 minutes"),
    "22_epochs": (FINETUNE, [], "22 fine-tuning epochs instead of 24, to train within 30 minutes"),
    "recipe": (FINETUNE, [], "+ flips to zoom applied as one affine map per image (one interpolation instead of two, "
                             "~1.3x faster an epoch): the recipe"),
    "rotation_zoom_at_2e-5": (FINETUNE, PREVIOUS_RATE,
                              "tried, not adopted: the recipe at the previous rate, 2e-5 after a 1-epoch warm-up"),
    "colour_on_recipe": (FINETUNE, COLOUR, "tried, not adopted: the recipe + brightness, contrast, saturation "
                                           "+-10%, hue +-2%"),
    "shift_on_recipe": (FINETUNE, ["train.augmentation.width_shift_range=0.1",
                                   "train.augmentation.height_shift_range=0.1"],
                        "tried, not adopted: the recipe + shifts up to 10% of the width and height"),
    "unfreeze_from_block_6": (FINETUNE, ["model.trainable_layers=49"],
                              "tried, not adopted: the recipe fine-tuning blocks 6-13 (the 14 and 7 px stages) only"),
    "dropout_0.5": (FINETUNE, ["model.dropout=0.5"], "tried, not adopted: the recipe with dropout 0.5 before the "
                                                     "classifier instead of 0.25"),
    "mixup_0.2": (FINETUNE, ["train.mixup=0.2"], "tried, not adopted: the recipe + MixUp (Beta(0.2, 0.2) blends of "
                                                 "image pairs and their labels)"),
    "upsampled_256": (FINETUNE, ["data.image_size=256", "train.fine_tune_epochs=19"],
                      "tried, not adopted: the recipe on images upsampled to 256 px (1.3x the compute), 19 "
                      "fine-tuning epochs to stay within 30 minutes"),
    "no_label_smoothing": (FINETUNE, ["train.label_smoothing=0"],
                           "the recipe without label smoothing (hard targets): what its 0.1 is worth"),
    "batch_16": (FINETUNE, ["train.batch_size=16"], "tried, not adopted: the recipe in batches of 16 instead of 32 "
                                                   "(twice the updates, the same rates)"),
    "ema_0.999": (FINETUNE, ["train.ema_momentum=0.999"], "tried, not adopted: the recipe averaging its weights "
                                                          "over ~8 epochs (0.999 a step) instead of ~4 (0.998)"),
    "shades_of_gray": (FINETUNE, ["model.colour_constancy=shades_of_gray"],
                       "tried, not adopted: the recipe with Shades of Gray colour constancy in the model (each "
                       "image's colour cast removed)"),
    "weight_decay_0.05": (FINETUNE, ["train.weight_decay=0.05"],
                          "tried, not adopted: the recipe with AdamW weight decay 0.05 instead of Keras' 0.004"),
    "label_smoothing_0.2": (FINETUNE, ["train.label_smoothing=0.2"],
                            "tried, not adopted: the recipe with label smoothing 0.2 instead of 0.1"),
    "192px_30_epochs": (FINETUNE, ["data.image_size=192", "train.fine_tune_epochs=30"],
                        "tried, not adopted: the recipe on images downsampled to 192 px (0.73x the compute), 30 "
                        "fine-tuning epochs in the same time"),
    "sqrt_sampling": (FINETUNE, ["train.sampling=sqrt"],
                      "tried, not adopted: the recipe drawing classes in proportion to the square root of their "
                      "counts instead of equally (nv 8.5x as often as df, not 72x or 1x)"),
    "erasing_0.5": (FINETUNE, ["train.augmentation.erasing=0.5"],
                    "tried, not adopted: the recipe + random erasing (a rectangle of 2-33% of the image replaced by "
                    "noise in half of the images)"),
    "rate_2e-4": (FINETUNE, ["train.fine_tune_learning_rate=0.0002"],
                  "tried, not adopted: the recipe fine-tuning at 2e-4 instead of 1e-4"),
    "layer_decay_0.95_at_2e-4": (FINETUNE, ["train.fine_tune_learning_rate=0.0002", "train.layer_decay=0.95"],
                                 "tried, not adopted: the recipe with layer-wise rate decay: the head at 2e-4, each "
                                 "weighted backbone layer at 0.95x the one above it (the middle ~1e-4, the first "
                                 "5e-5)"),
    "rate_3e-4": (FINETUNE, [*RIGHT_ANGLES_AT_2E_5, *warmed_up_rate("0.0003")],
                  "tried, not adopted: fine-tuning at 3e-4 (15x) with a 2-epoch warm-up, right-angle views"),
    "standalone_160": (FINETUNE, [*RIGHT_ANGLES_AT_2E_5, "data.image_size=160", "train.epochs=3",
                                  "train.fine_tune_epochs=8", "train.fine_tune_learning_rate=0.0003", *CLASS_WEIGHTS,
                                  "train.ema_momentum=null"],
                       "tried, not adopted: issue 17's standalone check in the pipeline: 160 px, 3 head + 8 "
                       "fine-tuning epochs at 3e-4, balanced class weights, no moving average"),
    "bfloat16": (FINETUNE, ["train.mixed_precision=mixed_bfloat16"], "the recipe computed in bfloat16"),
    "bfloat16_pointwise": (FINETUNE, ["train.mixed_precision=mixed_bfloat16_pointwise"],
                           "the recipe with its plain (1x1 and first) convolutions in bfloat16, the depthwise ones "
                           "in float32"),
    "low_resolution_160": (FINETUNE, ["train.low_resolution_epochs=14", "train.low_resolution=160"],
                           "progressive resizing: the first 14 of the 22 fine-tuning epochs on images downscaled to "
                           "160 px (~0.4x the compute an epoch), the last 8 at 224 px, validated at 224 throughout"),
    "low_resolution_144": (FINETUNE, ["train.low_resolution_epochs=14", "train.low_resolution=144"],
                           "progressive resizing as above at 144 px (~0.3x the compute an epoch)"),
    "erasing_on_recipe": (FINETUNE, ["train.augmentation.erasing=0.5"],
                          "tried, not adopted: random erasing in half of the images on today's recipe (its "
                          "augmentation one affine map)"),
    "dropout_0.1": (FINETUNE, ["model.dropout=0.1"],
                    "tried, not adopted: today's recipe with dropout 0.1 before the classifier instead of 0.25"),
    "sqrt_on_recipe": (FINETUNE, ["train.sampling=sqrt"],
                       "tried, not adopted: today's recipe drawing classes in proportion to the square root of "
                       "their counts, the skew left to the class biases fitted on validation"),
    "logit_adjusted_on_recipe": (FINETUNE, ["train.sampling=shuffle", "train.logit_adjustment=1.0"],
                                 "tried, not adopted: today's recipe with every image drawn once an epoch (no "
                                 "resampling) and the logit-adjusted loss (Menon et al. 2021) weighing the classes"),
    "sgd_momentum_on_recipe": (FINETUNE, ["train.optimizer=sgd", "train.momentum=0.9", "train.learning_rate=0.01",
                                          "train.fine_tune_learning_rate=0.0005"],
                               "today's recipe with SGD and momentum 0.9 instead of AdamW, the head at 10x its "
                               "rate, fine-tuning at 5x"),
    "gem_pooling_on_recipe": (FINETUNE, ["model.pooling=gem"],
                              "tried, not adopted: today's recipe pooling the feature maps by their generalized "
                              "mean (power 3, learned in fine-tuning) instead of their average"),
    "zoom_0.25": (FINETUNE, ["train.augmentation.zoom_range=0.25"],
                  "today's recipe zooming +-25% instead of +-15%"),
    "plain_tail_7": (FINETUNE, ["train.plain_epochs=7"],
                     "today's recipe with its last 7 fine-tuning epochs on the 8 exact right-angle views only (no "
                     "turn by other angles, no zoom), as the test-time views show the images"),
    "batch_norm_affine": (FINETUNE, ["model.batch_norm_affine=true"],
                          "today's recipe fine-tuning each BatchNorm's scale and offset too, its statistics kept "
                          "ImageNet's"),
}
ON_THE_RECIPE = {"recipe", "bfloat16", "low_resolution_160", "low_resolution_144", "erasing_on_recipe",
                 "dropout_0.1", "sqrt_on_recipe", "logit_adjusted_on_recipe", "sgd_momentum_on_recipe",
                 "gem_pooling_on_recipe", "zoom_0.25", "bfloat16_pointwise", "plain_tail_7",
                 "batch_norm_affine"}
VARIANTS = {name: (recipe, overrides if recipe != FINETUNE or name in ON_THE_RECIPE
                   else ["train.augmentation.one_resampling=false", *overrides], what)
            for name, (recipe, overrides, what) in VARIANTS.items()}
COLUMNS = ["variant", "what", "balanced accuracy", "melanoma sensitivity", "macro AUC", "ECE", "training s",
           "best epoch", "dtype"]


def shared_overrides():
    return ["data.source=local", f"data.path={common.HAM10000_DIR}", "model.alpha=0.75",
            f"model.weights={common.MOBILENET_WEIGHTS}"]


def lib_command(*arguments, overrides=()):
    return [common.PYTHON, "-m", "lib", *arguments] + [part for value in overrides for part in ("-p", value)]


def train_variant(name, outputs, recipe, overrides):
    """Run notebooks 01-03 of a variant; a finished run folder is reused when it was trained with exactly these
    params (under any run name: the folder may have been renamed when the recipe changed). Returns the run folder."""
    from lib import artifacts, params

    run_dir = Path(outputs) / f"ablation_{name}"
    if run_dir.is_dir() and "03_train" in artifacts.finished_steps(run_dir):
        trained = params.load_run(run_dir)
        wanted = params.load(common.PROJECT_ROOT / recipe, shared_overrides() + overrides, name=trained.name)
        if trained != wanted:
            raise RuntimeError(f"{run_dir} was trained with other params than variant {name} asks for: move it away "
                               "to train the variant again")
        return run_dir
    command = lib_command("run", recipe, "--name", run_dir.name, "--outputs", str(outputs), "--until", "03_train",
                          overrides=shared_overrides() + overrides) + (["--resume"] if run_dir.is_dir() else [])
    result = common.run_measured(command, log_path=Path(outputs) / f"{run_dir.name}.log")
    if result["returncode"] != 0:
        raise RuntimeError(f"{name} failed; see {Path(outputs) / f'{run_dir.name}.log'}")
    return run_dir


def validation_metrics(run_dir):
    """The checkpoint's metrics on the validation split (one view per image, uncalibrated), with the training time."""
    from lib import artifacts, evaluation, inputs, params

    p = params.load_run(run_dir)
    validation = artifacts.read_manifest(run_dir, split="validation")
    images = inputs.image_dataset(validation["abs_path"], [0] * len(validation), 1, p.data.image_size, 32)
    probabilities = artifacts.load_model(run_dir).predict(images.map(lambda x, y: x), verbose=0)
    metrics = evaluation.compute_metrics(validation["label"], probabilities, artifacts.class_names(run_dir))
    training = artifacts.read_json(Path(run_dir) / artifacts.TRAINING)
    return {"balanced accuracy": metrics["balanced_accuracy"],
            "melanoma sensitivity": metrics["melanoma"]["sensitivity"], "macro AUC": metrics["roc_auc"],
            "ECE": metrics["calibration"]["ece"], "training s": training_seconds(training),
            "best epoch": training["best_epoch"], "dtype": training["dtype_policy"]}


def training_seconds(training):
    """training.json's wall time, marked when the run was resumed (the time is then that of the last process only)."""
    seconds = training["wall_time_seconds"]
    return f"{seconds} (resumed)" if any(phase["resumed"] for phase in training["phases"]) else seconds


PROBE_C = (0.01, 0.1, 1.0)


def probe(c):
    """scikit-learn's class-balanced logistic regression on standardised features: the baseline to beat."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=5000))


def frozen_features(run_dir, paths):
    """{name: pooled features of the images at paths[name]} by the frozen ImageNet backbone of the run's params (one
    backbone for all), cached in the run folder (features/logistic_regression/<name>.npy)."""
    from lib import artifacts, inputs, models, params

    p = params.load_run(run_dir)
    backbone = models.build_model(p.model.backbone, len(artifacts.class_names(run_dir)), p.data.image_size,
                                  alpha=p.model.alpha, weights=p.model.weights, pooling=p.model.pooling,
                                  trainable_layers=0, colour_constancy=p.model.colour_constancy)
    extractor, folder = models.feature_model(backbone), Path(run_dir) / "features" / "logistic_regression"
    return {name: inputs.cached_features(extractor, folder, name, list(image_paths), p.data.image_size)
            for name, image_paths in paths.items()}


def logistic_regression(run_dir):
    """`probe` on the frozen ImageNet backbone's pooled features of the run's images (C chosen on validation from
    PROBE_C): {"C", "validation", "test"} metrics."""
    from lib import artifacts, evaluation

    classes = artifacts.class_names(run_dir)
    rows = {split: artifacts.read_manifest(run_dir, split=split) for split in ("train", "validation", "test")}
    features = frozen_features(run_dir, {split: split_rows["abs_path"] for split, split_rows in rows.items()})
    labels = {split: list(split_rows["label"]) for split, split_rows in rows.items()}
    c, classifier = chosen_probe(features, labels)
    order = [list(classifier.classes_).index(name) for name in classes]
    return {"C": c, **{split: evaluation.compute_metrics(
        labels[split], classifier.predict_proba(features[split])[:, order], classes) for split in ("validation", "test")}}


def chosen_probe(features, labels):
    """`probe` fitted on features["train"] at each C of PROBE_C; the one with the best balanced accuracy on
    features["validation"] (the first of equals): (C, fitted classifier)."""
    from sklearn.metrics import balanced_accuracy_score

    fits = {c: probe(c).fit(features["train"], labels["train"]) for c in PROBE_C}
    return max(fits.items(), key=lambda fit: balanced_accuracy_score(labels["validation"],
                                                                     fit[1].predict(features["validation"])))


def evaluation_rows(run_dir):
    """The evaluation's own choices on validation, from the recipe's first seed (metrics.json): test-time augmentation
    (balanced accuracy of each set of views), temperature scaling (ECE before and after) and class biases."""
    from lib import artifacts

    metrics = artifacts.read_json(Path(run_dir) / artifacts.METRICS)
    tta, temperature = metrics["tta"], metrics["temperature"]
    views = ", ".join(f"{variant} {value:.3f}" for variant, value in tta["validation_balanced_accuracy"].items())
    orientations = (tta.get("orientations") or {}).get("validation")
    if orientations:
        views += f"; one view over the {len(orientations)} orientations {statistics.mean(orientations):.3f}"
    return [{"variant": "tta", "what": f"+ test-time augmentation, chosen on validation: {tta['chosen']} ({views})",
             "balanced accuracy": tta["validation_balanced_accuracy"][tta["chosen"]]},
            {"variant": "temperature", "what": f"+ temperature scaling, T = {temperature['value']:.2f} fitted on "
                                               f"validation (ECE before {temperature['validation_ece_before']:.3f})",
             "ECE": temperature["validation_ece_after"]}, *class_bias_rows(temperature.get("class_bias"))]


def class_bias_rows(block):
    """The class biases' row: held-out validation balanced accuracy without and with them (none when off)."""
    if not block or not block["cross_validation"]:
        return []
    cross_validation = block["cross_validation"]
    return [{"variant": "class_bias", "what": f"+ class biases fitted on validation, {'' if block['applied'] else 'not '}"
                                              f"applied (held-out halves: {cross_validation['without']:.3f} without)",
             "balanced accuracy": cross_validation["with"]}]


def run_seeds(outputs, seeds):
    """`python -m lib sweep` of the recipe over `seeds` seeds (all five notebooks); returns the run folders."""
    name = "ablation_recipe_seeds"
    sweep_file = Path(outputs) / f"{name}-sweep.json"
    command = lib_command("sweep", FINETUNE, "--seeds", str(seeds), "--name", name, "--outputs", str(outputs),
                          overrides=shared_overrides()) + (["--resume"] if sweep_file.is_file() else [])
    result = common.run_measured(command, log_path=Path(outputs) / f"{name}.log")
    if result["returncode"] != 0:
        raise RuntimeError(f"the seeds failed; see {Path(outputs) / f'{name}.log'}")
    return [Path(outputs) / run for run in json.loads(sweep_file.read_text())["runs"]]


def seed_rows(run_dirs, baseline):
    """Per seed, then mean and sample standard deviation: the test metrics of the recipe as notebook 04 reports them
    (the views validation chose, averaged and calibrated, as the web page runs them; and one view), beside the
    logistic regression."""
    from lib import artifacts

    keys = {"balanced accuracy": ("balanced_accuracy",), "melanoma sensitivity": ("melanoma", "sensitivity"),
            "macro AUC": ("roc_auc",), "accuracy": ("accuracy",)}
    rows = []
    for run_dir in run_dirs:
        metrics = artifacts.read_json(run_dir / artifacts.METRICS)
        training = artifacts.read_json(run_dir / artifacts.TRAINING)
        row = {"run": run_dir.name}
        for label, path in keys.items():
            value = metrics
            for key in path:
                value = value[key]
            row[label] = value
        tta = metrics.get("tta") or {}
        row["TTA chosen"] = tta.get("chosen")
        row["balanced accuracy, one view"] = (tta.get("one_view") or {}).get("balanced_accuracy",
                                                                              row["balanced accuracy"])
        row["ECE before / after temperature"] = (f"{metrics['temperature']['test_ece_before']:.3f} / "
                                                 f"{metrics['temperature']['test_ece_after']:.3f}")
        row["training s"] = training["wall_time_seconds"]
        rows.append(row)
    summary = {"run": "mean ± sd"}
    for label in [*keys, "balanced accuracy, one view", "training s"]:
        values = [row[label] for row in rows]
        digits = 0 if label == "training s" else 3
        summary[label] = f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}" \
            if len(values) > 1 else values[0]
    test = baseline["test"]
    rows += [summary, {"run": f"logistic regression (C={baseline['C']})", "balanced accuracy": test["balanced_accuracy"],
                       "melanoma sensitivity": test["melanoma"]["sensitivity"], "macro AUC": test["roc_auc"],
                       "accuracy": test["accuracy"]}]
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: " + ", ".join(VARIANTS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the recipe on the test split (0: none)")
    parser.add_argument("--outputs", default=str(common.PROJECT_ROOT / "outputs" / "benchmarks"))
    args = parser.parse_args(argv)
    if not (common.HAM10000_DIR / "HAM10000_metadata.csv").is_file() or not common.MOBILENET_WEIGHTS.is_file():
        print(f"the shared data or weights are missing ({common.HAM10000_DIR}, {common.MOBILENET_WEIGHTS})")
        return 2
    Path(args.outputs).mkdir(parents=True, exist_ok=True)
    rows = []
    for name in filter(None, args.variants.split(",")):
        recipe, overrides, description = VARIANTS[name]
        rows.append({"variant": name, "what": description,
                     **validation_metrics(train_variant(name, args.outputs, recipe, overrides))})
        print(json.dumps(rows[-1]), flush=True)
    seeds = run_seeds(args.outputs, args.seeds) if args.seeds else []
    baseline = logistic_regression(seeds[0] if seeds else train_variant("recipe", args.outputs, *VARIANTS["recipe"][:2]))
    rows.append({"variant": "logistic_regression", "what": f"scikit-learn on the frozen features (C={baseline['C']})",
                 "balanced accuracy": baseline["validation"]["balanced_accuracy"],
                 "melanoma sensitivity": baseline["validation"]["melanoma"]["sensitivity"],
                 "macro AUC": baseline["validation"]["roc_auc"], "ECE": baseline["validation"]["calibration"]["ece"]})
    if seeds:
        rows += evaluation_rows(seeds[0])
    validation_table = common.markdown_table(rows, COLUMNS)
    print(validation_table)
    test_table = ""
    if seeds:
        test_rows = seed_rows(seeds, baseline)
        test_table = common.markdown_table(test_rows, list(test_rows[0]))
        print(test_table)
    command = f".venv/bin/python benchmarks/finetune_ablation.py --variants {args.variants} --seeds {args.seeds}"
    common.update_results("finetune_ablation", f"""
## 7. Fine-tuning recipe on real HAM10000 (issue 17)

Measured {common.machine_line()}.

Reproduce: `{command}`

Data: the shared one-image-per-lesion HAM10000 folder (5,984 images, 224 px), split by lesion with
`data.split_seed` 42 (4,188 train / 898 validation / 898 test images); ImageNet MobileNet v1 alpha 0.75 from a local
weights file. Every choice below was read on the **validation** split (single view, before calibration); the test
split was read only by the recipe's seeds.

{validation_table}

The recipe over {args.seeds} seeds (only `seed` differs: same split, same test images), on the **test** split as
notebook 04 reports it (the test-time augmentation chosen on validation, averaged, temperature-calibrated
probabilities, as the web page runs it; one view in its own column), beside the logistic regression on the same
frozen features:

{test_table}
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
