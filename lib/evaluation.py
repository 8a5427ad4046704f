"""Evaluate a trained classifier: predictions on any list of images, scikit-learn metrics beside
baselines, calibration data and Grad-CAM heat maps. Figures live in `plots.py`, files in `report.py`."""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn import metrics as skmetrics
from sklearn.dummy import DummyClassifier
from sklearn.preprocessing import label_binarize

from lib.errors import ImageError

logger = logging.getLogger(__name__)

# The class whose miss matters most: melanoma for HAM10000 labels, malignant for binary labels.
MELANOMA_CLASSES = ("mel", "malignant")
# Metrics repeated for variants of the evaluation (test-time augmentation, external data).
HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "top2_accuracy", "top3_accuracy")


def read_manifest(manifest_path, split="test"):
    """Rows of a run's data/manifest.csv for one split (all rows if `split` is None), with an extra
    `abs_path` column: the image path made absolute against the run directory (the manifest's parent's
    parent). Works for any run's manifest, so an external dataset prepared by notebook 02 in its own
    run folder can be evaluated the same way."""
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise FileNotFoundError(f"manifest not found: {manifest_path}; run notebook 02_preprocess first")
    table = pd.read_csv(manifest_path)
    if split is not None:
        if split not in set(table["split"]):
            raise ValueError(f"no '{split}' rows in {manifest_path}; splits present: "
                             f"{', '.join(sorted(set(table['split'])))}")
        table = table[table["split"] == split].reset_index(drop=True)
    run_dir = manifest_path.parent.parent
    table["abs_path"] = [str(run_dir / path) for path in table["path"]]
    return table


def load_images(image_paths, image_size):
    """Decode PNG/JPEG files to a float32 array (N, image_size, image_size, 3) of RGB values in [0, 255],
    the model's input. Images must already be image_size x image_size (notebook 02 makes them so)."""
    images = np.empty((len(image_paths), image_size, image_size, 3), dtype=np.float32)
    for index, path in enumerate(image_paths):
        with Image.open(path) as image:
            if image.size != (image_size, image_size):
                raise ImageError(f"{path} is {image.size[0]}x{image.size[1]}, the model expects "
                                 f"{image_size}x{image_size}: preprocess it with notebook 02 "
                                 f"(data.image_size: {image_size})")
            images[index] = np.asarray(image.convert("RGB"), dtype=np.float32)
    return images


def predict_probabilities(model, images, batch_size=32, tta=False):
    """Class probabilities (N, C) for float RGB images (N, S, S, 3) in [0, 255]. With `tta`, the mean of
    the predictions on the image, its horizontal flip, its vertical flip and both flips (lesions have
    no up or left, so each flip is an equally valid view)."""
    if len(images) == 0:
        raise ValueError("no images to predict")
    views = [images]
    if tta:
        views += [images[:, :, ::-1], images[:, ::-1, :], images[:, ::-1, ::-1]]
    outputs = []
    for view in views:
        # training=False: keeps any augmentation layer saved inside the model switched off
        batches = [np.asarray(model(np.ascontiguousarray(view[start:start + batch_size]), training=False))
                   for start in range(0, len(view), batch_size)]
        outputs.append(np.concatenate(batches))
    return np.mean(outputs, axis=0)


def predict_paths(model, image_paths, image_size, batch_size=32, tta=False):
    """`predict_probabilities` on image files, loading one batch at a time to bound memory."""
    chunks = [predict_probabilities(model, load_images(image_paths[start:start + batch_size], image_size),
                                    batch_size=batch_size, tta=tta)
              for start in range(0, len(image_paths), batch_size)]
    if not chunks:
        raise ValueError("no image paths to predict")
    return np.concatenate(chunks)


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
    names = [name for name in MELANOMA_CLASSES if name in class_names]
    if not names:
        return None
    positive = list(class_names).index(names[0])
    truth, predicted = true_indices == positive, predicted_indices == positive
    result = {"class": names[0], "sensitivity": None, "specificity": None}
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


def summarize(labels, probabilities, class_names, train_labels, seed, tta_probabilities=None):
    """The content of metrics.json: `compute_metrics` plus classes, baselines {majority, stratified}
    fitted on `train_labels`, and tta (headline metrics of `tta_probabilities`, or None)."""
    result = {"classes": list(class_names), **compute_metrics(labels, probabilities, class_names)}
    result["baselines"] = baseline_metrics(train_labels, labels, class_names, seed=seed)
    result["tta"] = None
    if tta_probabilities is not None:
        tta = compute_metrics(labels, tta_probabilities, class_names)
        result["tta"] = {key: tta[key] for key in HEADLINE_METRICS if key in tta}
    return result


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
