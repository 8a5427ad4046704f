"""The statistics behind honest numbers on a small test split: bootstrap confidence intervals that resample whole
lesions, temperature scaling, class biases fitted for balanced accuracy, the decision threshold that reaches a
target sensitivity, and the cut-off below which an input looks unlike the data the model was fitted on.

Everything here takes plain arrays (integer class indices, probabilities (N, C)) and returns numbers, so it is
tested without a model; `lib.evaluation` applies it to a run's predictions.

The bootstrap draws every resample at once as a matrix of weights (how often each image is drawn), so that each
metric of 1000 resamples is a few matrix products instead of 1000 calls to scikit-learn.
"""

import numpy as np
import pandas as pd
from scipy import optimize, special
from sklearn import metrics as skmetrics

# Bounds of the temperature search: outside them the model's probabilities carry almost no ranking information
# (T > 20) or are sharpened far beyond anything a network produces (T < 0.05).
TEMPERATURE_BOUNDS = (0.05, 20.0)
# Bounds of each class's log-probability bias: e^5 ~ 150x, beyond any correction of a class's prior (HAM10000's
# largest class is 72x its smallest); without a bound a class with no errors left would be pushed without limit.
CLASS_BIAS_BOUND = 5.0


# ---- bootstrap resamples ------------------------------------------------------------------------------

def resample_weights(groups, n_resamples, seed):
    """(n_resamples, N) weights: how often each of N images is drawn in each bootstrap resample. Whole groups
    (lesion ids: the images of one lesion are not independent) are drawn with replacement, as many as there are,
    and every image of a drawn group comes with it. `groups`: one group label per image."""
    codes, uniques = pd.factorize(pd.Series(list(groups)))
    if len(codes) == 0:
        raise ValueError("resample_weights needs at least one image")
    if (codes < 0).any():
        raise ValueError(f"{int((codes < 0).sum())} images have no group (lesion id); give each its own, e.g. its "
                         "image id")
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(uniques), np.full(len(uniques), 1.0 / len(uniques)), size=n_resamples)
    return draws[:, codes].astype(np.float64)


def image_weights(n_images, n_resamples, seed):
    """`resample_weights` with each image its own group."""
    return resample_weights(np.arange(n_images), n_resamples, seed)


def percentile_interval(values, confidence=0.95):
    """[low, high]: the central `confidence` share of the finite `values` (the percentile bootstrap interval), or
    None when no resample gave a value (e.g. no melanoma was drawn in any of them)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return [float(low), float(high)]


# ---- metrics of many resamples at once ----------------------------------------------------------------

def confusion_matrices(weights, true_indices, predicted_indices, num_classes):
    """(R, K, K) weighted confusion matrices, rows true and columns predicted, one per row of `weights` (R, N)."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    cells = np.asarray(true_indices) * num_classes + np.asarray(predicted_indices)
    one_hot = np.zeros((len(cells), num_classes * num_classes))
    one_hot[np.arange(len(cells)), cells] = 1.0
    return (weights @ one_hot).reshape(len(weights), num_classes, num_classes)


def _divide(numerator, denominator):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def confusion_scores(confusion):
    """Accuracy, balanced accuracy and macro F1 of each confusion matrix (R, K, K), as scikit-learn defines them:
    balanced accuracy is the mean recall over the classes present in the labels; macro F1 averages all K
    classes, with 0 for a class neither present nor predicted (zero_division=0). Returns {name: (R,) array}."""
    diagonal = np.diagonal(confusion, axis1=1, axis2=2)
    support, predicted, total = confusion.sum(axis=2), confusion.sum(axis=1), confusion.sum(axis=(1, 2))
    recall = _divide(diagonal, support)
    present = support > 0
    balanced = _divide(np.where(present, recall, 0.0).sum(axis=1), present.sum(axis=1))
    f1 = np.nan_to_num(_divide(2 * diagonal, support + predicted), nan=0.0)
    return {"accuracy": _divide(diagonal.sum(axis=1), total), "balanced_accuracy": balanced,
            "macro_f1": f1.mean(axis=1)}


def binary_scores(weights, positive, flagged):
    """Sensitivity (flagged share of the positives) and specificity (unflagged share of the negatives) under each
    row of `weights` (R, N); NaN where a resample has no positive (or no negative). Returns (sensitivity,
    specificity), each (R,)."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    positive, flagged = np.asarray(positive, bool), np.asarray(flagged, bool)
    return (_divide(weights @ (positive & flagged), weights @ positive),
            _divide(weights @ (~positive & ~flagged), weights @ ~positive))


def weighted_auc(weights, positive, scores):
    """ROC AUC of `scores` for the boolean labels `positive` under each row of `weights` (R, N): the weighted
    share of (positive, negative) pairs ordered right, ties counting half, which is what scikit-learn's
    roc_auc_score computes with sample_weight. NaN where a resample lacks positives or negatives. Sorting once
    and summing per tied score keeps it one pass over the images for all resamples."""
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(scores, kind="stable")
    sorted_scores, positive = np.asarray(scores)[order], np.asarray(positive, bool)[order]
    weights = weights[:, order]
    _, tie_starts = np.unique(sorted_scores, return_index=True)
    positives = np.add.reduceat(weights * positive, tie_starts, axis=1)  # (R, distinct scores)
    negatives = np.add.reduceat(weights * ~positive, tie_starts, axis=1)
    negatives_below = np.cumsum(negatives, axis=1) - negatives
    ordered_pairs = (positives * (negatives_below + 0.5 * negatives)).sum(axis=1)
    return _divide(ordered_pairs, positives.sum(axis=1) * negatives.sum(axis=1))


def macro_auc(weights, true_indices, probabilities, positive_index=None):
    """(R,) ROC AUC as `evaluation.roc_auc` reports it: with `positive_index` (binary labels) the AUC of that
    class's score; otherwise the mean one-vs-rest AUC over the classes present in each resample."""
    true_indices = np.asarray(true_indices)
    if positive_index is not None:
        return weighted_auc(weights, true_indices == positive_index, probabilities[:, positive_index])
    per_class = np.stack([weighted_auc(weights, true_indices == index, probabilities[:, index])
                          for index in range(probabilities.shape[1])], axis=1)
    defined = np.isfinite(per_class)
    return _divide(np.where(defined, per_class, 0.0).sum(axis=1), defined.sum(axis=1))


def bootstrap(true_indices, probabilities, weights, auc_positive_index=None, screening_index=None, flagged=None,
              confidence=0.95):
    """Percentile intervals (central `confidence` share) of the headline metrics over the resamples `weights`
    (R, N): accuracy, balanced_accuracy, macro_f1, roc_auc (of class `auc_positive_index`'s score for binary
    labels, else the one-vs-rest macro mean), and with `screening_index` (the melanoma or malignant class) its
    sensitivity and specificity at the argmax (melanoma_*) and, with `flagged` (N booleans: the images over the
    operating threshold), at that threshold (operating_point_*). Returns {metric: [low, high] or None}."""
    probabilities = np.asarray(probabilities, dtype=float)
    true_indices = np.asarray(true_indices)
    predicted = probabilities.argmax(axis=1)
    confusion = confusion_matrices(weights, true_indices, predicted, probabilities.shape[1])
    resampled = confusion_scores(confusion)
    resampled["roc_auc"] = macro_auc(weights, true_indices, probabilities, auc_positive_index)
    if screening_index is not None:
        positive = true_indices == screening_index
        resampled["melanoma_sensitivity"], resampled["melanoma_specificity"] = binary_scores(
            weights, positive, predicted == screening_index)
        if flagged is not None:
            resampled["operating_point_sensitivity"], resampled["operating_point_specificity"] = binary_scores(
                weights, positive, flagged)
    return {name: percentile_interval(values, confidence) for name, values in resampled.items()}


# ---- temperature scaling ------------------------------------------------------------------------------

def apply_temperature(probabilities, temperature, class_bias=None):
    """softmax(log p / T + b) of each row: T > 1 softens the probabilities, T < 1 sharpens them, the ranking of the
    classes (hence every argmax metric) stays; the optional per-class log biases b (`fit_class_bias`) shift it.
    Equal to p^(1/T) e^b / sum(p^(1/T) e^b), what the web page computes; a probability of exactly 0 stays 0. For a
    sigmoid-output model this also makes each row sum to 1."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    with np.errstate(divide="ignore"):
        logits = np.log(np.asarray(probabilities, dtype=np.float64)) / temperature
    return special.softmax(logits if class_bias is None else logits + np.asarray(class_bias), axis=1)


def negative_log_likelihood(true_indices, probabilities, temperature):
    """Mean -log of the temperature-scaled probability of the true class (probabilities floored at float32's
    smallest normal number: a true class predicted at exactly 0 would otherwise make every temperature
    infinitely bad)."""
    logits = np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), np.finfo(np.float32).tiny))
    log_probabilities = special.log_softmax(logits / temperature, axis=1)
    return float(-np.mean(log_probabilities[np.arange(len(true_indices)), true_indices]))


def fit_temperature(true_indices, probabilities):
    """The temperature T > 0 that minimises the negative log-likelihood of `apply_temperature(probabilities, T)`
    on `true_indices` (Guo et al. 2017, "On calibration of modern neural networks"); searched on log T within
    TEMPERATURE_BOUNDS, where the likelihood has a single minimum."""
    true_indices = np.asarray(true_indices)
    if len(true_indices) == 0:
        raise ValueError("fit_temperature needs at least one labelled image")
    low, high = np.log(TEMPERATURE_BOUNDS)
    result = optimize.minimize_scalar(lambda log_t: negative_log_likelihood(true_indices, probabilities,
                                                                            np.exp(log_t)),
                                      bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def fit_class_bias(true_indices, probabilities, class_weights):
    """Per-class biases b (C,) added to log p that minimise the negative log-likelihood with each image weighted by
    `class_weights`[its class] (C,), for the classes with images; the others keep 0, and b is centred on them.
    With weights n / (C * count), every class weighs the same, so the probabilities become those of a world where
    the classes are equally likely, and their argmax aims at balanced accuracy (mean recall): a classifier whose
    training over- or under-weighted a class (balanced batches still differ from the validation split's mix, a
    loss weight shifts a class on purpose) gets its decision rule re-fitted with a handful of numbers (Menon et al.
    2021, "Long-tail learning via logit adjustment", fitted here rather than set from the priors)."""
    true_indices = np.asarray(true_indices)
    if len(true_indices) == 0:
        raise ValueError("fit_class_bias needs at least one labelled image")
    logits = np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), np.finfo(np.float32).tiny))
    n_classes = logits.shape[1]
    present = np.bincount(true_indices, minlength=n_classes) > 0
    image_weights = np.asarray(class_weights, dtype=np.float64)[true_indices]
    image_weights = image_weights / image_weights.sum()
    onehot = np.eye(n_classes)[true_indices]

    def loss_and_gradient(free):
        bias = np.zeros(n_classes)
        bias[present] = free
        log_probabilities = special.log_softmax(logits + bias, axis=1)
        loss = -np.sum(image_weights * log_probabilities[np.arange(len(true_indices)), true_indices])
        gradient = image_weights @ (np.exp(log_probabilities) - onehot)
        return loss, gradient[present]

    result = optimize.minimize(loss_and_gradient, np.zeros(int(present.sum())), jac=True, method="L-BFGS-B",
                               bounds=[(-CLASS_BIAS_BOUND, CLASS_BIAS_BOUND)] * int(present.sum()))
    bias = np.zeros(n_classes)
    bias[present] = result.x - result.x.mean()
    return bias


# ---- the screening threshold and the out-of-distribution cut-off --------------------------------------

def threshold_for_sensitivity(positive, scores, target):
    """The operating point of the rule `score >= threshold` that flags at least `target` of the positives with
    the fewest images flagged (hence the best specificity): (threshold, sensitivity, specificity) on these images,
    read off scikit-learn's ROC curve. The threshold lies halfway between the lowest score flagged and the next
    lower one, not on a score: a browser computing the same probability in float32 then flags the same images.
    Raises ValueError without positives or negatives."""
    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        raise ValueError(f"a threshold needs positive and negative images; got {int(positive.sum())} positive of "
                         f"{len(positive)}")
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must be in (0, 1]; got {target}")
    false_positive_rate, true_positive_rate, thresholds = skmetrics.roc_curve(positive, scores,
                                                                              drop_intermediate=False)
    # the first (highest) threshold that reaches the target; the tolerance absorbs 0.85 != 17/20 in floating point
    index = int(np.argmax(true_positive_rate >= target - 1e-9))
    next_lower = thresholds[index + 1] if index + 1 < len(thresholds) else 0.0
    return (float((thresholds[index] + next_lower) / 2), float(true_positive_rate[index]),
            float(1.0 - false_positive_rate[index]))


def low_confidence_cutoff(probabilities, quantile):
    """The `quantile` of the top probability over `probabilities` (N, C): inputs whose top probability falls below
    it are less confident than all but that share of the images it was fitted on."""
    return float(np.quantile(np.asarray(probabilities, dtype=float).max(axis=1), quantile))
