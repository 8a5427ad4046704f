"""Evaluate a trained classifier: predictions on any list of images (with test-time augmentation views),
scikit-learn metrics beside baselines, with bootstrap intervals, a temperature and class biases fitted on
validation, the screening operating point, the out-of-distribution cut-off, results per subgroup, and Grad-CAM heat
maps. The statistics live in `statistics.py`, figures in `plots.py`, files in `report.py`.

What the web page runs is the model on the views of the photo that validation chose (one, the 4 flips or all 8
right-angle views, averaged inside the exported model), its probabilities calibrated by the temperature and, where
validation asked for them, the class biases: `evaluate` reports exactly that as the headline, and one view beside it.
"""

import dataclasses
import hashlib
import logging

import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn import metrics as skmetrics
from sklearn.dummy import DummyClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import label_binarize

from lib import inputs, registry, statistics

logger = logging.getLogger(__name__)

# The class whose miss matters most: melanoma for HAM10000 labels, malignant for binary labels.
MELANOMA_CLASSES = ("mel", "malignant")
# Metrics repeated for variants of the evaluation (test-time augmentation, validation, external data).
HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "top2_accuracy", "top3_accuracy")
# Views averaged by each test-time augmentation mode (`view` numbers them: the first 4 are the flips).
TTA_VIEWS = {"off": 1, "flips": 4, "dihedral": 8, "dihedral_45": 16}
# Views 8-15 are views 0-7 of the image turned by this many degrees: lesions have no up, so a turn between the right
# angles is as valid a picture as the right angles are (training turns them by any angle).
HALF_RIGHT_ANGLE = 45.0
# Below this share of validation images' top probability, an input is "unlike the training data" (web page).
OOD_QUANTILE = 0.05
# How `class_bias: auto` decides: the biases are fitted on one half of the validation images and scored on the
# other, both ways, over this many random halvings (the fit takes milliseconds; one halving is noisy).
CLASS_BIAS_FOLDS, CLASS_BIAS_REPEATS = 2, 10
# Subgroups smaller than this are flagged: one image more or less moves their balanced accuracy by several points,
# and fewer melanomas than SMALL_GROUP_MELANOMAS make a sensitivity whose 95% interval spans 0.3 or more.
SMALL_GROUP_IMAGES = 30
SMALL_GROUP_MELANOMAS = 10
# Age bands of the model card (years; lower bound inclusive).
AGE_BANDS = ((0, "under 30"), (30, "30-44"), (45, "45-59"), (60, "60-74"), (75, "75 and over"))
AGE_ORDER = {name: position for position, (_, name) in enumerate(AGE_BANDS)}
SUBGROUPS = {"age": "age band", "sex": "sex", "localization": "body site", "dx_type": "diagnosis confirmed by"}


# ---- predictions ------------------------------------------------------------------------------------

def view_steps(index):
    """How view `index` (0-15) is made, as (turn in degrees, transpose, flip left-right, flip upside down), applied
    in that order: 0 the image, 1 flipped left-right, 2 upside down, 3 both (a half turn); 4-7 the same after
    swapping rows and columns (a transpose), which gives the quarter turns; 8-15 views 0-7 of the image turned by
    HALF_RIGHT_ANGLE. Lesions have no up or left, so all are equally valid pictures of them."""
    if not 0 <= index < 16:
        raise ValueError(f"view index must be 0-15; got {index}")
    return HALF_RIGHT_ANGLE if index >= 8 else 0.0, index % 8 >= 4, bool(index % 2), index % 4 >= 2


def turn_matrix(degrees, size):
    """The 8 numbers of TensorFlow's ImageProjectiveTransformV3 (as `keras.ops.image.affine_transform` takes them)
    that turn a (size x size) image by `degrees` about its centre: each output pixel is read where the inverse turn
    puts it."""
    angle = np.deg2rad(degrees)
    cos, sin = np.cos(angle), np.sin(angle)
    centre = (size - 1.0) / 2.0
    return np.array([cos, -sin, centre - centre * (cos - sin), sin, cos, centre - centre * (sin + cos), 0.0, 0.0],
                    dtype=np.float32)


def turned(images, degrees):
    """Images (N, S, S, C) turned by `degrees` about their centre, bilinear, the corners filled by the nearest
    border pixel; unchanged for 0. TensorFlow ops, eager (evaluation) or in the exported graph (the web page), so
    both compute the same pixels. The batch rides in the channels, one image to the op: TF.js's cpu kernel of
    ImageProjectiveTransformV3 turns only the first image of a batch, and its wasm kernel reflects the borders
    differently from TensorFlow's (nearest agrees in both, measured in Chromium)."""
    if not degrees:
        return images
    batch, size, channels = tf.shape(images)[0], images.shape[1], images.shape[3]
    stacked = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, size, size, -1])
    turned_stack = tf.raw_ops.ImageProjectiveTransformV3(
        images=stacked, transforms=tf.constant(turn_matrix(degrees, size))[None], output_shape=[size, size],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")
    return tf.transpose(tf.reshape(turned_stack, [size, size, batch, channels]), [2, 0, 1, 3])


def view(images, index):
    """View `index` (`view_steps`) of images (N, S, S, 3)."""
    return np.asarray(oriented(turned(images, view_steps(index)[0]), index))


def oriented(images, index):
    """The right-angle part of view `index` (transpose, then flips) of images already turned (`turned`), in
    TensorFlow ops, like `turned`: eager here, in the exported graph for the web page (`export.average_over_views`)."""
    _, transpose, flip_left_right, flip_upside_down = view_steps(index)
    if transpose:
        images = tf.transpose(images, [0, 2, 1, 3])
    if flip_left_right:
        images = tf.reverse(images, axis=[2])
    if flip_upside_down:
        images = tf.reverse(images, axis=[1])
    return images


def predict_views(model, images, n_views=1, batch_size=32):
    """Class probabilities (N, n_views, C) of float RGB images (N, S, S, 3) in [0, 255], for the first `n_views`
    views (`view`)."""
    if len(images) == 0:
        raise ValueError("no images to predict")
    images = np.asarray(images, dtype=np.float32)
    turns = {degrees: np.asarray(turned(images, degrees))
             for degrees in sorted({view_steps(index)[0] for index in range(n_views)})}
    outputs = []
    for index in range(n_views):
        pictures = turns[view_steps(index)[0]]
        # training=False: keeps any augmentation layer saved inside the model switched off
        outputs.append(np.concatenate([np.asarray(model(oriented(pictures[start:start + batch_size], index),
                                                        training=False))
                                       for start in range(0, len(pictures), batch_size)]))
    return np.stack(outputs, axis=1)


def predict_paths(model, image_paths, image_size, n_views=1, batch_size=32):
    """`predict_views` on processed images (decoded by `inputs.load_processed`), one batch in memory at a time."""
    image_paths = list(image_paths)
    if not image_paths:
        raise ValueError("no image paths to predict")
    return np.concatenate([predict_views(model, inputs.load_processed(image_paths[start:start + batch_size],
                                                                      image_size), n_views, batch_size)
                           for start in range(0, len(image_paths), batch_size)])


@dataclasses.dataclass(frozen=True)
class SplitPredictions:
    """The model's outputs on one split: `rows` its manifest rows (image_id, label, lesion_id, and subgroup
    columns when the dataset has them), `views` probabilities (N, V, C) of the first V views of each image."""
    rows: pd.DataFrame
    views: np.ndarray

    def probabilities(self, tta="off"):
        """(N, C): the mean over the views of a TTA mode (off: the image as it is)."""
        if TTA_VIEWS[tta] > self.views.shape[1]:
            raise ValueError(f"tta {tta!r} needs {TTA_VIEWS[tta]} views; only {self.views.shape[1]} were predicted")
        return self.views[:, :TTA_VIEWS[tta]].mean(axis=1)


def views_needed(tta):
    """How many views `evaluate.tta` needs predicted (auto compares every mode)."""
    if tta not in registry.TTA_MODES:
        raise ValueError(f"unknown tta {tta!r}; choose one of: {', '.join(registry.TTA_MODES)}")
    return max(TTA_VIEWS.values()) if tta == "auto" else TTA_VIEWS[tta]


def predict_split(model, rows, image_size, n_views=1, batch_size=32):
    """`SplitPredictions` of manifest `rows` (with abs_path, as `artifacts.read_manifest` gives them), or None
    when there are no rows (a run without a validation split)."""
    if len(rows) == 0:
        return None
    rows = rows.reset_index(drop=True)
    return SplitPredictions(rows, predict_paths(model, rows["abs_path"], image_size, n_views, batch_size))


def label_indices(labels, class_names):
    """Class names -> integer indices in `class_names` order; unknown names raise ValueError."""
    unknown = sorted(set(labels) - set(class_names))
    if unknown:
        raise ValueError(f"labels {unknown} are not classes of this model; classes: {', '.join(class_names)}")
    position = {name: index for index, name in enumerate(class_names)}
    return np.array([position[label] for label in labels], dtype=int)


def roc_auc(true_indices, probabilities, class_names):
    """ROC AUC: (summary, per_class, notes). Binary: AUC of the second class (positive) score. Multi-class:
    one-vs-rest per class and their macro mean over classes present in `true_indices`; a class absent
    from the evaluated labels (or the only one present) gets None and a note rather than a crash."""
    notes, per_class = [], {}
    present = sorted(set(true_indices.tolist()))
    if len(present) < 2:
        notes.append("ROC AUC undefined: the evaluated labels contain a single class")
        return None, {name: None for name in class_names}, notes
    if len(class_names) == 2:
        positive = positive_class_index(class_names)
        value = float(skmetrics.roc_auc_score(true_indices == positive, probabilities[:, positive]))
        return value, {class_names[positive]: value}, notes
    indicator = label_binarize(true_indices, classes=range(len(class_names)))
    for index, name in enumerate(class_names):
        per_class[name] = (float(skmetrics.roc_auc_score(indicator[:, index], probabilities[:, index]))
                           if index in present else None)
    absent = [class_names[index] for index in range(len(class_names)) if index not in present]
    if absent:
        notes.append(f"classes absent from the evaluated labels, left out of ROC AUC and of balanced "
                     f"accuracy's mean recall: {', '.join(absent)}")
    macro = skmetrics.roc_auc_score(indicator[:, present], probabilities[:, present], average="macro")
    return float(macro), per_class, notes


def positive_class_index(class_names):
    """Index of the class a screening result is about: `mel` or `malignant` when present, else the last."""
    for name in MELANOMA_CLASSES:
        if name in class_names:
            return list(class_names).index(name)
    return len(class_names) - 1


def melanoma_screening(true_indices, predicted_indices, class_names):
    """Sensitivity and specificity of the `mel` (or `malignant`) class against all others, or None
    when neither is a class."""
    positive = screening_index(class_names)
    if positive is None:
        return None
    truth, predicted = true_indices == positive, predicted_indices == positive
    result = {"class": class_names[positive], "sensitivity": None, "specificity": None}
    if truth.any():
        result["sensitivity"] = float(skmetrics.recall_score(truth, predicted, pos_label=True))
    if (~truth).any():
        result["specificity"] = float(skmetrics.recall_score(truth, predicted, pos_label=False))
    return result


def calibration(true_indices, probabilities, n_bins=10):
    """Reliability-diagram data for the top predicted class, and its expected calibration error
    (ECE = sum over confidence bins of bin share x |accuracy - mean confidence|; scikit-learn has no ECE).
    Returns {"ece", "n_bins", "bins": [{lower, upper, count, accuracy, confidence}]}; empty bins have
    None accuracy and confidence."""
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == true_indices).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_of = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for index in range(n_bins):
        members = bin_of == index
        count = int(members.sum())
        accuracy = float(correct[members].mean()) if count else None
        mean_confidence = float(confidence[members].mean()) if count else None
        if count:
            ece += count / len(confidence) * abs(accuracy - mean_confidence)
        bins.append({"lower": float(edges[index]), "upper": float(edges[index + 1]), "count": count,
                     "accuracy": accuracy, "confidence": mean_confidence})
    return {"ece": float(ece), "n_bins": n_bins, "bins": bins}


def compute_metrics(labels, probabilities, class_names, calibration_bins=10):
    """Every metric of the evaluation for string `labels` (N,) and `probabilities` (N, C) in
    `class_names` order, computed by scikit-learn. Keys: n_test, accuracy, balanced_accuracy, macro_f1,
    roc_auc, roc_auc_per_class, top2_accuracy/top3_accuracy (multi-class only), per_class {class:
    {precision, recall, f1, support}}, melanoma (or None), confusion_matrix (rows true, columns
    predicted), calibration, notes."""
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.shape != (len(labels), len(class_names)):
        raise ValueError(f"probabilities have shape {probabilities.shape}; expected "
                         f"({len(labels)}, {len(class_names)}) for {len(labels)} labels and classes "
                         f"{', '.join(class_names)}")
    true_indices = label_indices(labels, class_names)
    predicted_indices = probabilities.argmax(axis=1)
    all_classes = list(range(len(class_names)))
    report = skmetrics.classification_report(true_indices, predicted_indices, labels=all_classes,
                                             target_names=list(class_names), output_dict=True, zero_division=0)
    auc, auc_per_class, notes = roc_auc(true_indices, probabilities, class_names)
    result = {
        "n_test": int(len(labels)),
        "accuracy": float(skmetrics.accuracy_score(true_indices, predicted_indices)),
        # mean recall over the classes present in the labels (the ISIC 2018 ranking metric)
        "balanced_accuracy": float(skmetrics.balanced_accuracy_score(true_indices, predicted_indices)),
        "macro_f1": float(skmetrics.f1_score(true_indices, predicted_indices, labels=all_classes,
                                             average="macro", zero_division=0)),
        "roc_auc": auc,
        "roc_auc_per_class": auc_per_class,
    }
    if len(class_names) > 2:
        for k in (2, 3):
            if k < len(class_names):
                result[f"top{k}_accuracy"] = float(skmetrics.top_k_accuracy_score(
                    true_indices, probabilities, k=k, labels=all_classes))
    result["per_class"] = {name: {"precision": float(report[name]["precision"]),
                                  "recall": float(report[name]["recall"]),
                                  "f1": float(report[name]["f1-score"]),
                                  "support": int(report[name]["support"])} for name in class_names}
    result["melanoma"] = melanoma_screening(true_indices, predicted_indices, class_names)
    result["confusion_matrix"] = skmetrics.confusion_matrix(true_indices, predicted_indices,
                                                            labels=all_classes).tolist()
    result["calibration"] = calibration(true_indices, probabilities, n_bins=calibration_bins)
    result["notes"] = notes
    return result


def baseline_metrics(train_labels, test_labels, class_names, seed):
    """Scores of two models that never look at an image, on the same test labels: `majority` (always the
    most frequent training class) and `stratified` (random guesses in the training class frequencies,
    seeded). Each: {accuracy, balanced_accuracy, macro_f1}."""
    train_indices = label_indices(train_labels, class_names)
    test_indices = label_indices(test_labels, class_names)
    baselines = {}
    for name, strategy in (("majority", "most_frequent"), ("stratified", "stratified")):
        dummy = DummyClassifier(strategy=strategy, random_state=seed)
        dummy.fit(np.zeros((len(train_indices), 1)), train_indices)
        predicted = dummy.predict(np.zeros((len(test_indices), 1)))
        baselines[name] = {
            "accuracy": float(skmetrics.accuracy_score(test_indices, predicted)),
            "balanced_accuracy": float(skmetrics.balanced_accuracy_score(test_indices, predicted)),
            "macro_f1": float(skmetrics.f1_score(test_indices, predicted, labels=range(len(class_names)),
                                                 average="macro", zero_division=0)),
        }
    return baselines


def headline(labels, probabilities, class_names):
    """The HEADLINE_METRICS of `compute_metrics`, with n (the number of images)."""
    computed = compute_metrics(labels, probabilities, class_names)
    return {"n": computed["n_test"], **{key: computed[key] for key in HEADLINE_METRICS if key in computed}}


def screening_index(class_names):
    """Index of the screening class (`mel`, else `malignant`), or None when the labels have neither."""
    names = [name for name in MELANOMA_CLASSES if name in class_names]
    return list(class_names).index(names[0]) if names else None


def test_set_fingerprint(image_ids):
    """{"sha256", "n"}: the SHA-256 of the sorted image ids, one per line. Two runs with the same fingerprint were
    tested on the same images, so their numbers compare; `compare` groups runs by it."""
    ids = sorted(str(image_id) for image_id in image_ids)
    return {"sha256": hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest(), "n": len(ids)}


def calibrated(split, temperature, tta="off"):
    """(N, C) probabilities of a `SplitPredictions` (the mean over the views of `tta`) scaled by the temperature
    block of metrics.json, and shifted by its class biases where applied (unchanged when it is None)."""
    probabilities = split.probabilities(tta)
    return probabilities if temperature is None else statistics.apply_temperature(
        probabilities, temperature["value"], applied_class_bias(temperature))


def applied_class_bias(temperature):
    """The class biases (C,) of a temperature block that applies them, else None."""
    block = (temperature or {}).get("class_bias")
    return np.array(list(block["bias"].values())) if block and block["applied"] else None


def class_bias_weights(true_indices, class_names, class_weight=None):
    """(C,) weight of each class's images in `statistics.fit_class_bias`: n / (C * count), so that each class
    weighs the same (balanced accuracy's view), times train.class_weight's factor for the class where it is a
    mapping (a class the recipe chose to weigh more in training, as melanoma, keeps that emphasis); 0 for a class
    without images."""
    counts = np.bincount(true_indices, minlength=len(class_names))
    weights = np.where(counts > 0, len(true_indices) / (len(class_names) * np.maximum(counts, 1)), 0.0)
    if isinstance(class_weight, dict):
        weights = weights * np.array([float(class_weight.get(name, 1.0)) for name in class_names])
    return weights


def class_bias_cross_validation(true_indices, probabilities, weights, seed=0):
    """{"folds", "repeats", "without", "with"}: the balanced accuracy of held-out validation images without and
    with class biases fitted on the rest (CLASS_BIAS_FOLDS stratified folds, CLASS_BIAS_REPEATS shuffles), the
    mean over all; None when a class has fewer images than folds."""
    true_indices = np.asarray(true_indices)
    if np.bincount(true_indices)[np.unique(true_indices)].min() < CLASS_BIAS_FOLDS:
        return None
    scores = {"without": [], "with": []}
    for repeat in range(CLASS_BIAS_REPEATS):
        folds = StratifiedKFold(CLASS_BIAS_FOLDS, shuffle=True, random_state=seed + repeat)
        for fitted, held_out in folds.split(probabilities, true_indices):
            bias = statistics.fit_class_bias(true_indices[fitted], probabilities[fitted], weights)
            shifted = statistics.apply_temperature(probabilities[held_out], 1.0, bias)
            for name, scored in (("without", probabilities[held_out]), ("with", shifted)):
                scores[name].append(skmetrics.balanced_accuracy_score(true_indices[held_out],
                                                                      scored.argmax(axis=1)))
    return {"folds": CLASS_BIAS_FOLDS, "repeats": CLASS_BIAS_REPEATS,
            **{name: float(np.mean(values)) for name, values in scores.items()}}


def choose_class_bias(mode, validation_true, validation_probabilities, class_names, class_weight=None):
    """The temperature block's "class_bias", None for mode off: {"mode", "applied", "bias" {class: b}, "weights"
    {class: w}, "cross_validation"}. The biases are fitted on all validation images (already temperature-scaled)
    with `class_bias_weights`; "on" applies them, "auto" only when they raise held-out validation balanced
    accuracy (`class_bias_cross_validation`; not with too few images of a class to tell)."""
    if mode == "off":
        return None
    validation_true = np.asarray(validation_true)
    weights = class_bias_weights(validation_true, class_names, class_weight)
    bias = statistics.fit_class_bias(validation_true, validation_probabilities, weights)
    cross_validation = class_bias_cross_validation(validation_true, validation_probabilities, weights)
    applied = mode == "on" or (cross_validation is not None
                               and cross_validation["with"] > cross_validation["without"])
    return {"mode": mode, "applied": bool(applied), "bias": dict(zip(class_names, map(float, bias))),
            "weights": dict(zip(class_names, map(float, weights))), "cross_validation": cross_validation}


def temperature_scaling(value, validation_true, validation_probabilities, test_true, test_probabilities):
    """metrics.json's "temperature": T `value` (fitted on the validation split's probabilities, what the web page
    computes: the mean over the chosen views), and the expected calibration error and the negative log-likelihood
    (what T minimises, so the ECE may rise where it falls) before and after scaling, on validation and on test."""
    scores = {"fitted_on": "validation", "n": int(len(validation_true))}
    for split, true, probabilities in (("validation", validation_true, validation_probabilities),
                                       ("test", test_true, test_probabilities)):
        true = np.asarray(true)
        scaled = {"before": (probabilities, 1.0), "after": (statistics.apply_temperature(probabilities, value), value)}
        for when, (calibrated_probabilities, temperature) in scaled.items():
            scores[f"{split}_ece_{when}"] = calibration(true, calibrated_probabilities)["ece"]
            scores[f"{split}_nll_{when}"] = statistics.negative_log_likelihood(true, probabilities, temperature)
    return {"value": value, **scores}


def choose_operating_point(validation_true, validation_probabilities, class_names, target_sensitivity):
    """metrics.json's "operating_point" without its test figures: the threshold on the calibrated probability of
    the screening class that catches `target_sensitivity` of its validation images with the best specificity.
    None when the labels have no screening class, or the validation split lacks positives or negatives."""
    index = screening_index(class_names)
    if index is None:
        return None
    positive = np.asarray(validation_true) == index
    if positive.all() or not positive.any():
        logger.warning("no operating point: the validation split has %d %s images of %d", int(positive.sum()),
                       class_names[index], len(positive))
        return None
    threshold, sensitivity, specificity = statistics.threshold_for_sensitivity(
        positive, validation_probabilities[:, index], target_sensitivity)
    return {"class": class_names[index], "threshold": threshold, "target_sensitivity": float(target_sensitivity),
            "validation": {"sensitivity": sensitivity, "specificity": specificity}}


def flagged_by(operating_point, probabilities, class_names):
    """Booleans (N,): the images whose calibrated probability of the operating point's class reaches its
    threshold (what the web page flags), or None without an operating point."""
    if operating_point is None:
        return None
    return probabilities[:, list(class_names).index(operating_point["class"])] >= operating_point["threshold"]


def low_confidence_cutoff(validation_probabilities):
    """metrics.json's "ood": the OOD_QUANTILE of the calibrated top probability on the validation split."""
    return {"score": "max_probability",
            "threshold": statistics.low_confidence_cutoff(validation_probabilities, OOD_QUANTILE),
            "quantile": OOD_QUANTILE, "fitted_on": "validation", "n": int(len(validation_probabilities))}


def resampling_groups(rows):
    """What the bootstrap draws: each image's lesion_id (an image is its own lesion where none is given)."""
    image_ids = rows["image_id"].astype(str)
    return rows["lesion_id"].astype(str).where(rows["lesion_id"].notna(), image_ids) if "lesion_id" in rows \
        else image_ids


def bootstrap_intervals(true_indices, probabilities, weights, class_names, flagged=None):
    """`statistics.bootstrap` with the class roles read from `class_names`: the screening class, and the class
    whose score is the binary ROC AUC (as in `roc_auc`)."""
    binary = len(class_names) == 2
    return statistics.bootstrap(true_indices, probabilities, weights,
                                auc_positive_index=positive_class_index(class_names) if binary else None,
                                screening_index=screening_index(class_names), flagged=flagged)


def operating_point_on_test(operating_point, test_true, flagged, intervals, class_names):
    """The operating point with its "test" figures: sensitivity and specificity at the threshold, each
    {"value", "ci"}."""
    positive = np.asarray(test_true) == list(class_names).index(operating_point["class"])
    sensitivity, specificity = (float(value[0]) for value in
                                statistics.binary_scores(np.ones((1, len(positive))), positive, flagged))
    ci = intervals or {}
    return {**operating_point, "test": {
        "sensitivity": {"value": None if np.isnan(sensitivity) else sensitivity,
                        "ci": ci.get("operating_point_sensitivity")},
        "specificity": {"value": None if np.isnan(specificity) else specificity,
                        "ci": ci.get("operating_point_specificity")}}}


def orientation_scores(split, class_names):
    """Balanced accuracy of one view in each orientation predicted (`view` order), or None with only one: how
    much the answer for a photo depends on how it was turned, each orientation being as likely as another."""
    if split is None or split.views.shape[1] < 2:
        return None
    true_indices = label_indices(split.rows["label"], class_names)
    return [float(skmetrics.balanced_accuracy_score(true_indices, split.views[:, index].argmax(axis=1)))
            for index in range(split.views.shape[1])]


def choose_tta(mode, validation, class_names, class_bias="off", class_weight=None):
    """metrics.json's "tta" without its test figures: {"mode", "chosen", "views", "validation_balanced_accuracy"
    {variant: value}, "held_out_balanced_accuracy" {variant: value} or None, "orientations" {"validation":
    `orientation_scores`}}. A fixed mode is used as asked; auto takes the variant with the highest score (the
    fewest views on a tie) among those whose views were predicted (all, in notebook 04: `views_needed`), and off
    without a validation split. Without class biases the score is the validation balanced accuracy; with them
    (`class_bias` on or auto) it is what the page would run, scored on held-out validation images (`held_out_score`):
    the biases move the argmax, so the views that score best before them need not after. Auto scores off, one
    view, by its mean over the orientations: the checkpoint was chosen on the images as stored, so their own score
    is that choice's optimistic maximum, not what one view of a new photo, turned any way, can expect."""
    n_predicted = validation.views.shape[1] if validation is not None else 1
    candidates = ([variant for variant, views in TTA_VIEWS.items() if views <= n_predicted] if mode == "auto"
                  else sorted({"off", mode}, key=list(TTA_VIEWS).index))
    scores, held_out = {}, None
    if validation is not None:
        true_indices = label_indices(validation.rows["label"], class_names)
        for variant in candidates:
            predicted = validation.probabilities(variant).argmax(axis=1)
            scores[variant] = float(skmetrics.balanced_accuracy_score(true_indices, predicted))
        if mode == "auto" and class_bias != "off":
            held_out = held_out_scores(validation, candidates, class_names, class_bias, class_weight)
    orientations = orientation_scores(validation, class_names)
    if mode != "auto":
        chosen = mode
    elif held_out and None not in held_out.values():
        chosen = max(held_out, key=lambda variant: (held_out[variant], -TTA_VIEWS[variant]))
    elif scores:
        one_view = float(np.mean(orientations)) if orientations else scores["off"]
        chosen = max(scores, key=lambda variant: (one_view if variant == "off" else scores[variant],
                                                  -TTA_VIEWS[variant]))
    else:
        chosen = "off"
    return {"mode": mode, "chosen": chosen, "views": TTA_VIEWS[chosen], "validation_balanced_accuracy": scores,
            "held_out_balanced_accuracy": held_out, "orientations": {"validation": orientations}}


def held_out_score(true_indices, probabilities, class_names, class_bias, class_weight=None):
    """Held-out validation balanced accuracy of probabilities as the page would show them: the temperature fitted,
    then the class biases as `class_bias` (on, auto) decides (`class_bias_cross_validation`); None when a class has
    too few images to tell."""
    scaled = statistics.apply_temperature(probabilities, statistics.fit_temperature(true_indices, probabilities))
    weights = class_bias_weights(true_indices, class_names, class_weight)
    cross_validation = class_bias_cross_validation(true_indices, scaled, weights)
    if cross_validation is None:
        return None
    if class_bias == "on":
        return cross_validation["with"]
    return max(cross_validation["with"], cross_validation["without"])


def held_out_scores(validation, variants, class_names, class_bias, class_weight=None):
    """{variant: `held_out_score`}, off as its mean over every orientation predicted (one view of a photo turned
    any way), the others on their views' average."""
    true_indices = label_indices(validation.rows["label"], class_names)
    scores = {}
    for variant in variants:
        if variant == "off":
            each = [held_out_score(true_indices, validation.views[:, index], class_names, class_bias, class_weight)
                    for index in range(validation.views.shape[1])]
            scores[variant] = None if None in each else float(np.mean(each))
        else:
            scores[variant] = held_out_score(true_indices, validation.probabilities(variant), class_names,
                                             class_bias, class_weight)
    return scores


def subgroup_labels(rows, column):
    """Each row's subgroup for a SUBGROUPS column (age: AGE_BANDS of the age in years), "unknown" where missing;
    None when the column is absent or splits the images into fewer than two known groups."""
    if column not in rows:
        return None
    if column == "age":
        years = pd.to_numeric(rows[column], errors="coerce")
        bounds = [low for low, _ in AGE_BANDS] + [np.inf]
        labels = pd.cut(years, bounds, right=False, labels=[name for _, name in AGE_BANDS]).astype(object)
    else:
        labels = rows[column].astype(object).where(rows[column].notna() & (rows[column].astype(str) != ""))
    if labels.dropna().nunique() < 2:
        return None
    return labels.fillna("unknown").astype(str)


def subgroup_results(rows, true_indices, probabilities, class_names, flagged=None):
    """Balanced accuracy and screening-class sensitivity (at the argmax and, with `flagged`, at the operating
    point) per subgroup of SUBGROUPS, with counts; groups under SMALL_GROUP_IMAGES images, or whose sensitivity
    rests on fewer than SMALL_GROUP_MELANOMAS positives, are marked small. None without subgroup columns."""
    true_indices, predicted = np.asarray(true_indices), probabilities.argmax(axis=1)
    index = screening_index(class_names)
    positive = true_indices == index
    groups = []
    for column, title in SUBGROUPS.items():
        labels = subgroup_labels(rows, column)
        if labels is None:
            continue
        for group in sorted(labels.unique(), key=lambda name: (name == "unknown", AGE_ORDER.get(name, 0), name)):
            members = (labels == group).to_numpy()
            weights = members[None].astype(float)  # the group as a single "resample"
            scores = statistics.confusion_scores(statistics.confusion_matrices(weights, true_indices, predicted,
                                                                               len(class_names)))
            result = {"by": title, "group": group, "n": int(members.sum()), "n_positive": int(positive[members].sum()),
                      "balanced_accuracy": _number(scores["balanced_accuracy"][0])}
            if index is not None:
                result["sensitivity"] = _number(statistics.binary_scores(weights, positive, predicted == index)[0][0])
                if flagged is not None:
                    result["operating_point_sensitivity"] = _number(
                        statistics.binary_scores(weights, positive, flagged)[0][0])
            result["small"] = (result["n"] < SMALL_GROUP_IMAGES
                               or index is not None and result["n_positive"] < SMALL_GROUP_MELANOMAS)
            groups.append(result)
    if not groups:
        return None
    return {"class": None if index is None else class_names[index], "min_images": SMALL_GROUP_IMAGES,
            "min_positives": SMALL_GROUP_MELANOMAS, "groups": groups}


def _number(value):
    return None if value is None or not np.isfinite(value) else float(value)


def validation_decisions(validation, class_names, tta="off", class_bias="off", class_weight=None):
    """What notebook 04 decides on the validation split alone, in its order, the test split unread: {"tta": the
    views (`choose_tta`), "temperature": T fitted to those views' average (None without a validation split),
    "class_bias": the biases fitted after it (`choose_class_bias`, None when off or without validation)}."""
    choice = choose_tta(tta, validation, class_names, class_bias, class_weight)
    if validation is None:
        return {"tta": choice, "temperature": None, "class_bias": None}
    true_indices = label_indices(validation.rows["label"], class_names)
    probabilities = validation.probabilities(choice["chosen"])
    temperature = statistics.fit_temperature(true_indices, probabilities)
    return {"tta": choice, "temperature": temperature,
            "class_bias": choose_class_bias(class_bias, true_indices,
                                            statistics.apply_temperature(probabilities, temperature), class_names,
                                            class_weight)}


def evaluate(test, validation, class_names, train_labels, tta="off", n_resamples=1000, target_sensitivity=0.85,
             seed=42, bootstrap_seed=42, class_bias="off", class_weight=None):
    """The content of metrics.json for `SplitPredictions` of the test and validation splits (validation may be
    None). The headline describes what the web page runs: the views `tta` takes on validation (`choose_tta`),
    averaged, probabilities scaled by the temperature fitted on validation to those averages, then shifted by the
    class biases `class_bias` takes there (`choose_class_bias`, weighing the classes as train.class_weight
    `class_weight` did). Keys: classes,
    test_set, the `compute_metrics` keys, baselines (fitted on `train_labels`, seeded by `seed`), validation
    (headline on validation), temperature, operating_point, ood, bootstrap (`n_resamples` resamples of whole lesions
    drawn with `bootstrap_seed`; None for 0), tta and subgroups."""
    if test is None:
        raise ValueError("no test split to evaluate: set data.test_fraction above 0 (or use a dataset with a test "
                         "folder) and rerun notebook 02_preprocess")
    decisions = validation_decisions(validation, class_names, tta, class_bias, class_weight)
    choice = decisions["tta"]
    views = choice["chosen"]
    test_true = label_indices(test.rows["label"], class_names)
    validation_true = None if validation is None else label_indices(validation.rows["label"], class_names)
    temperature = None if validation is None else {
        **temperature_scaling(decisions["temperature"], validation_true, validation.probabilities(views), test_true,
                              test.probabilities(views)),
        "class_bias": decisions["class_bias"]}
    test_probabilities = calibrated(test, temperature, views)
    metrics = {"classes": list(class_names), "test_set": test_set_fingerprint(test.rows["image_id"]),
               **compute_metrics(test.rows["label"], test_probabilities, class_names)}
    metrics["notes"] += _notes(test, validation)
    metrics["baselines"] = baseline_metrics(train_labels, test.rows["label"], class_names, seed=seed)
    metrics["temperature"] = temperature
    validation_probabilities = None if validation is None else calibrated(validation, temperature, views)
    metrics["validation"] = (None if validation is None else
                             headline(validation.rows["label"], validation_probabilities, class_names))
    operating_point = (None if validation is None else
                       choose_operating_point(validation_true, validation_probabilities, class_names,
                                              target_sensitivity))
    flagged = flagged_by(operating_point, test_probabilities, class_names)
    metrics["ood"] = None if validation is None else low_confidence_cutoff(validation_probabilities)
    weights = (statistics.resample_weights(resampling_groups(test.rows), n_resamples, bootstrap_seed)
               if n_resamples else None)
    intervals = (None if weights is None else
                 bootstrap_intervals(test_true, test_probabilities, weights, class_names, flagged))
    metrics["bootstrap"] = None if weights is None else {
        "n_resamples": int(n_resamples), "seed": int(bootstrap_seed), "confidence": 0.95,
        "unit": "lesion" if resampling_groups(test.rows).nunique() < len(test.rows) else "image",
        "n_units": int(resampling_groups(test.rows).nunique()), "intervals": intervals}
    metrics["operating_point"] = (None if operating_point is None else
                                  operating_point_on_test(operating_point, test_true, flagged, intervals, class_names))
    metrics["tta"] = tta_results(choice, test, class_names, temperature, test_true, weights)
    metrics["subgroups"] = subgroup_results(test.rows, test_true, test_probabilities, class_names, flagged)
    return metrics


def tta_results(choice, test, class_names, temperature, test_true, weights):
    """metrics.json's "tta": the `choose_tta` result `choice` with the test split's `orientation_scores` and, when
    it chose more than one view, "one_view": the headline metrics of one view of each test image (the image as
    stored, scaled by the same temperature) with their bootstrap "intervals": what the views add."""
    result = {**choice, "orientations": {**choice["orientations"], "test": orientation_scores(test, class_names)}}
    result["one_view"] = None
    if result["chosen"] != "off":
        probabilities = calibrated(test, temperature)
        result["one_view"] = headline(test.rows["label"], probabilities, class_names)
        result["one_view"]["intervals"] = (None if weights is None else
                                           bootstrap_intervals(test_true, probabilities, weights, class_names))
    return result


def _notes(test, validation):
    if validation is None:
        return ["no validation split: no temperature, operating point, out-of-distribution cut-off or TTA choice "
                "(set data.validation_fraction above 0)"]
    if set(validation.rows["image_id"]) & set(test.rows["image_id"]):
        return ["the validation split shares images with the test split (data.test_as_validation): the temperature, "
                "the operating point and the TTA choice were fitted on test images, so their test figures are "
                "optimistic"]
    return []


def score_external(model, used, skipped, class_names, image_size, temperature, source, dataset, tta="off",
                   batch_size=32):
    """Score the model on the external dataset `dataset` from `source`, prepared by `preprocess.prepare_external`
    (`used`, `skipped`): (metrics.json's "external", predictions table). Images whose class the model does not know
    are counted and left out; the views of `tta` (the run's chosen mode) are averaged and scaled by the run's
    `temperature` block (or None), as on test."""
    known = used[used["label"].isin(class_names)].reset_index(drop=True)
    if known.empty:
        raise ValueError(f"no external image has one of the model's classes ({', '.join(class_names)}); "
                         f"its labels: {', '.join(sorted(map(str, used['label'].unique())))}")
    split = SplitPredictions(known, predict_paths(model, known["abs_path"], image_size, TTA_VIEWS[tta], batch_size))
    probabilities = calibrated(split, temperature, tta)
    metrics = {"source": source, "dataset": dataset, "n_skipped": int(len(skipped)),
               "n_unknown_label": int(len(used) - len(known)), "tta": tta,
               "test_set": test_set_fingerprint(known["image_id"]),
               **compute_metrics(known["label"], probabilities, class_names)}
    return metrics, predictions_table(known["image_id"], known["label"], probabilities, class_names)


def predictions_table(image_ids, labels, probabilities, class_names):
    """One row per image: image_id, label, predicted, confidence, correct, prob_<class> per class."""
    probabilities = np.asarray(probabilities, dtype=float)
    table = pd.DataFrame({"image_id": list(image_ids), "label": list(labels),
                          "predicted": [class_names[index] for index in probabilities.argmax(axis=1)],
                          "confidence": probabilities.max(axis=1)})
    table["correct"] = table["label"] == table["predicted"]
    for index, name in enumerate(class_names):
        table[f"prob_{name}"] = probabilities[:, index]
    return table


def confident_mistakes(table, count=12):
    """The `count` wrong predictions of a `predictions_table` with the highest confidence, most confident
    first (the errors a user would trust most)."""
    return table[~table["correct"]].sort_values("confidence", ascending=False).head(count)


def pick_per_class(table, per_class, seed):
    """Up to `per_class` rows of `table` for each true label, drawn with `seed`, ordered by label."""
    picks = [group.sample(n=min(per_class, len(group)), random_state=seed)
             for _, group in table.groupby("label", sort=True)]
    return pd.concat(picks) if picks else table.head(0)


def gradcam_heatmaps(conv_model, classifier, images, class_indices=None):
    """Grad-CAM maps (N, S, S) float32 in [0, 1] for float RGB images (N, S, S, 3) in [0, 255].

    `conv_model` maps the images to the last conv activations (N, h, w, k) and `classifier` maps those to
    class probabilities, as returned by `models.gradcam_parts(model)`. Each map weights the activation
    channels by the mean gradient of the class probability (the predicted class, or `class_indices`),
    keeps the positive part, scales it to a maximum of 1 and resizes it bilinearly to the image size."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images, dtype=tf.float32)
    activations = conv_model(images, training=False)
    with tf.GradientTape() as tape:
        tape.watch(activations)
        probabilities = classifier(activations, training=False)
        if class_indices is None:
            class_indices = tf.argmax(probabilities, axis=1)
        class_indices = tf.cast(tf.reshape(class_indices, (-1, 1)), tf.int32)
        scores = tf.gather(probabilities, class_indices, batch_dims=1)
    gradients = tape.gradient(scores, activations)
    channel_weights = tf.reduce_mean(gradients, axis=(1, 2))
    maps = tf.nn.relu(tf.einsum("nhwk,nk->nhw", activations, channel_weights))
    peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
    # a map with no positive evidence stays all zero instead of dividing by zero
    maps = tf.math.divide_no_nan(maps, peak)
    maps = tf.image.resize(maps[..., tf.newaxis], images.shape[1:3], method="bilinear")[..., 0]
    return np.clip(maps.numpy(), 0.0, 1.0).astype(np.float32)
