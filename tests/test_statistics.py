"""Bootstrap intervals, temperature scaling, the screening threshold and the low-confidence cut-off, on arrays
whose answers are known."""

import numpy as np
import pytest
from sklearn import metrics as skmetrics

from lib import evaluation, statistics


def noisy_predictions(n_images, n_classes=4, accuracy=0.7, seed=0):
    """(true indices, probabilities) where about `accuracy` of the argmaxes are right."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, n_classes, n_images)
    right = rng.random(n_images) < accuracy
    predicted = np.where(right, true, (true + rng.integers(1, n_classes, n_images)) % n_classes)
    probabilities = rng.uniform(0.0, 0.5, (n_images, n_classes))
    probabilities[np.arange(n_images), predicted] += 1.0
    return true, probabilities / probabilities.sum(axis=1, keepdims=True)


def test_resampling_by_lesion_draws_all_images_of_a_lesion_together():
    lesions = ["a", "a", "a", "b", "c", "c"]

    weights = statistics.resample_weights(lesions, n_resamples=200, seed=1)

    assert weights.shape == (200, 6)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 1] == weights[:, 2]).all()
    assert (weights[:, 4] == weights[:, 5]).all()
    # each resample draws as many lesions as there are (3): a drawn k times brings 3k images
    assert (weights[:, [0, 3, 4]].sum(axis=1) == 3).all()


def test_resampling_is_reproducible_with_its_seed_and_refuses_missing_lesions():
    first = statistics.resample_weights(range(50), 10, seed=3)

    assert (first == statistics.resample_weights(range(50), 10, seed=3)).all()
    assert not (first == statistics.resample_weights(range(50), 10, seed=4)).all()
    with pytest.raises(ValueError, match="have no group"):
        statistics.resample_weights(["a", None, "b"], 10, seed=0)


def test_resampled_metrics_equal_scikit_learn_with_the_same_sample_weights():
    true, probabilities = noisy_predictions(300, n_classes=5, seed=2)
    probabilities = np.round(probabilities, 2)  # ties, which ROC AUC counts half
    weights = statistics.resample_weights(np.arange(300) // 3, n_resamples=4, seed=5)
    predicted = probabilities.argmax(axis=1)

    scores = statistics.confusion_scores(statistics.confusion_matrices(weights, true, predicted, 5))
    auc = statistics.macro_auc(weights, true, probabilities)

    for row, sample_weight in enumerate(weights):
        assert scores["accuracy"][row] == pytest.approx(
            skmetrics.accuracy_score(true, predicted, sample_weight=sample_weight))
        assert scores["balanced_accuracy"][row] == pytest.approx(
            skmetrics.balanced_accuracy_score(true, predicted, sample_weight=sample_weight))
        assert scores["macro_f1"][row] == pytest.approx(skmetrics.f1_score(
            true, predicted, labels=range(5), average="macro", zero_division=0, sample_weight=sample_weight))
        assert auc[row] == pytest.approx(skmetrics.roc_auc_score(
            np.eye(5)[true], probabilities, average="macro", sample_weight=sample_weight))


def test_bootstrap_intervals_cover_the_point_estimates():
    true, probabilities = noisy_predictions(400, seed=4)
    weights = statistics.resample_weights(np.arange(400), 1000, seed=0)
    predicted = probabilities.argmax(axis=1)

    intervals = statistics.bootstrap(true, probabilities, weights, screening_index=1,
                                     flagged=probabilities[:, 1] > 0.3)

    point = {"accuracy": skmetrics.accuracy_score(true, predicted),
             "balanced_accuracy": skmetrics.balanced_accuracy_score(true, predicted),
             "macro_f1": skmetrics.f1_score(true, predicted, average="macro"),
             "roc_auc": skmetrics.roc_auc_score(np.eye(4)[true], probabilities, average="macro"),
             "melanoma_sensitivity": skmetrics.recall_score(true == 1, predicted == 1),
             "operating_point_sensitivity": skmetrics.recall_score(true == 1, probabilities[:, 1] > 0.3)}
    for name, value in point.items():
        low, high = intervals[name]
        assert low < value < high, name
        assert high - low < 0.25, name


def test_intervals_shrink_as_the_test_set_grows():
    def width(n_images):
        true, probabilities = noisy_predictions(n_images, seed=6)
        weights = statistics.resample_weights(np.arange(n_images), 1000, seed=0)
        low, high = statistics.bootstrap(true, probabilities, weights)["balanced_accuracy"]
        return high - low

    small, large = width(100), width(1600)

    # the standard error falls as 1 / sqrt(n): 16 times the images, about a quarter of the width
    assert 0.15 < large / small < 0.4


def test_an_interval_is_none_when_no_resample_defines_the_metric():
    assert statistics.percentile_interval([np.nan, np.nan]) is None
    assert statistics.percentile_interval(np.arange(101.0), confidence=0.9) == pytest.approx([5.0, 95.0])


def overconfident(n_images, sharpening, seed=0):
    """Labels drawn from a calibrated model's probabilities, and those probabilities sharpened by `sharpening`
    (logits times `sharpening`): the true temperature is `sharpening`."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, (n_images, 5))
    calibrated = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    true = np.array([rng.choice(5, p=row) for row in calibrated])
    sharpened = np.exp(logits * sharpening)
    return true, sharpened / sharpened.sum(axis=1, keepdims=True)


def test_temperature_scaling_recovers_the_temperature_and_lowers_the_calibration_error():
    true, probabilities = overconfident(4000, sharpening=3.0)

    temperature = statistics.fit_temperature(true, probabilities)

    assert temperature == pytest.approx(3.0, rel=0.1)
    before = evaluation.calibration(true, probabilities)["ece"]
    after = evaluation.calibration(true, statistics.apply_temperature(probabilities, temperature))["ece"]
    assert before > 0.15 and after < before / 3


def test_temperature_changes_no_prediction_and_is_the_web_page_formula():
    _, probabilities = overconfident(50, sharpening=2.0, seed=1)
    probabilities[0] = [0.0, 0.2, 0.3, 0.5, 0.0]  # a probability of exactly 0 stays 0

    scaled = statistics.apply_temperature(probabilities, 1.7)

    page = probabilities ** (1 / 1.7) / (probabilities ** (1 / 1.7)).sum(axis=1, keepdims=True)
    assert scaled == pytest.approx(page)
    assert (scaled.argmax(axis=1) == probabilities.argmax(axis=1)).all()
    with pytest.raises(ValueError, match="must be > 0"):
        statistics.apply_temperature(probabilities, 0.0)


def shifted_predictions(n_images, shift, seed=0):
    """(true indices, probabilities) of 4 equally frequent classes from a model whose log-probabilities are off
    by `shift`, a class prior it wrongly learned."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 4, n_images)
    logits = rng.normal(0.0, 1.0, (n_images, 4))
    logits[np.arange(n_images), true] += 1.5
    shifted = np.exp(logits + shift)
    return true, shifted / shifted.sum(axis=1, keepdims=True)


def test_class_bias_recovers_a_shifted_prior_and_raises_balanced_accuracy():
    shift = np.array([1.0, 0.0, -0.5, -0.5])
    true, probabilities = shifted_predictions(8000, shift)

    bias = statistics.fit_class_bias(true, probabilities, np.ones(4))

    assert bias == pytest.approx(-shift - np.mean(-shift), abs=0.08)
    assert bias.sum() == pytest.approx(0.0, abs=1e-9)
    before = skmetrics.balanced_accuracy_score(true, probabilities.argmax(1))
    after = skmetrics.balanced_accuracy_score(true, statistics.apply_temperature(probabilities, 1.0, bias).argmax(1))
    assert after > before + 0.03


def test_class_bias_leaves_a_class_without_images_alone_and_is_the_web_page_formula():
    true, probabilities = shifted_predictions(400, np.zeros(4), seed=1)
    present = true != 3

    bias = statistics.fit_class_bias(true[present], probabilities[present], np.array([1.0, 1.0, 1.0, 0.0]))

    assert bias[3] == 0.0 and np.abs(bias).max() < statistics.CLASS_BIAS_BOUND
    page = probabilities ** (1 / 0.8) * np.exp(bias)
    assert statistics.apply_temperature(probabilities, 0.8, bias) == pytest.approx(
        page / page.sum(axis=1, keepdims=True))


def test_threshold_flags_the_fewest_images_that_reach_the_target_sensitivity():
    rng = np.random.default_rng(7)
    positive = np.arange(200) < 40
    scores = np.where(positive, rng.uniform(0.2, 1.0, 200), rng.uniform(0.0, 0.6, 200))

    threshold, sensitivity, specificity = statistics.threshold_for_sensitivity(positive, scores, target=0.85)

    flagged = scores >= threshold
    assert sensitivity == pytest.approx(flagged[positive].mean()) and sensitivity >= 0.85
    assert specificity == pytest.approx((~flagged[~positive]).mean())
    # flagging one score fewer misses the target; and no score sits on the threshold, where float32 could differ
    assert (scores[positive] > scores[flagged].min()).mean() < 0.85
    assert np.abs(scores - threshold).min() > 1e-6


def test_threshold_needs_positive_and_negative_images():
    with pytest.raises(ValueError, match="positive and negative"):
        statistics.threshold_for_sensitivity(np.zeros(5, bool), np.linspace(0, 1, 5), target=0.85)


def test_low_confidence_cutoff_is_the_quantile_of_the_top_probability():
    probabilities = np.column_stack([np.linspace(0.5, 1.0, 101), 1 - np.linspace(0.5, 1.0, 101)])

    assert statistics.low_confidence_cutoff(probabilities, 0.05) == pytest.approx(0.525)
