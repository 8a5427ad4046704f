"""Evaluation metrics against values computed by hand, predictions, and Grad-CAM on tiny models."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn import metrics as skmetrics

from lib import evaluation, statistics
from lib.errors import TrainingError

CLASSES = ["a", "b", "c"]
# Six test images: true labels and probabilities whose argmax is a, a, b, b, c, c.
LABELS = ["a", "a", "a", "b", "b", "c"]
PROBABILITIES = np.array([
    [0.7, 0.2, 0.1],
    [0.6, 0.3, 0.1],
    [0.1, 0.5, 0.4],  # a, predicted b, and a is not even in the top 2
    [0.2, 0.7, 0.1],
    [0.1, 0.3, 0.6],  # b, predicted c, b second
    [0.1, 0.2, 0.7],
])


def test_headline_metrics_match_hand_computed_values():
    metrics = evaluation.compute_metrics(LABELS, PROBABILITIES, CLASSES)

    assert metrics["n_test"] == 6
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # recall: a 2/3, b 1/2, c 1/1
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # precision: a 2/2, b 1/2, c 1/2 -> F1: a 0.8, b 0.5, c 2/3
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert metrics["top2_accuracy"] == pytest.approx(5 / 6)
    assert "top3_accuracy" not in metrics  # with three classes top-3 is always right


def test_per_class_report_matches_hand_computed_values():
    per_class = evaluation.compute_metrics(LABELS, PROBABILITIES, CLASSES)["per_class"]

    assert per_class["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert per_class["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert per_class["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})


def test_one_vs_rest_auc_matches_pairwise_counts():
    metrics = evaluation.compute_metrics(LABELS, PROBABILITIES, CLASSES)

    # a: of 9 (positive, negative) score pairs 7 are ordered right (ties count half); b: 6.5 of 8; c: all
    assert metrics["roc_auc_per_class"] == pytest.approx({"a": 7 / 9, "b": 6.5 / 8, "c": 1.0})
    assert metrics["roc_auc"] == pytest.approx((7 / 9 + 6.5 / 8 + 1.0) / 3)


def test_class_absent_from_test_labels_gets_a_note_not_a_crash():
    metrics = evaluation.compute_metrics(LABELS[:5], PROBABILITIES[:5], CLASSES)

    assert metrics["roc_auc_per_class"]["c"] is None
    assert metrics["roc_auc"] == pytest.approx(np.mean([metrics["roc_auc_per_class"][name] for name in "ab"]))
    assert any("c" in note and "absent" in note for note in metrics["notes"])


def test_binary_auc_scores_the_malignant_class():
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.65, 0.35]])
    labels = ["benign", "benign", "malignant", "malignant"]

    metrics = evaluation.compute_metrics(labels, probabilities, ["benign", "malignant"])

    # malignant scores 0.7 and 0.35 against benign 0.1 and 0.4: 3 of 4 pairs ordered right
    assert metrics["roc_auc"] == pytest.approx(0.75)
    assert "top2_accuracy" not in metrics
    assert metrics["melanoma"] == {"class": "malignant", "sensitivity": 0.5, "specificity": 1.0}


def test_melanoma_sensitivity_and_specificity_count_mel_against_the_rest():
    classes = ["bkl", "mel", "nv"]
    labels = ["mel", "mel", "nv", "bkl"]
    probabilities = np.array([[0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.1, 0.6, 0.3], [0.8, 0.1, 0.1]])

    melanoma = evaluation.compute_metrics(labels, probabilities, classes)["melanoma"]

    assert melanoma == {"class": "mel", "sensitivity": 0.5, "specificity": 0.5}


def test_no_melanoma_figures_without_a_melanoma_class():
    assert evaluation.compute_metrics(LABELS, PROBABILITIES, CLASSES)["melanoma"] is None


def test_expected_calibration_error_weights_each_bin_gap_by_its_share():
    probabilities = np.array([[0.85, 0.15], [0.85, 0.15], [0.35, 0.65], [0.35, 0.65]])
    true_indices = np.array([0, 1, 1, 1])

    result = evaluation.calibration(true_indices, probabilities, n_bins=10)

    # bin 0.8-0.9: accuracy 1/2 at confidence 0.85; bin 0.6-0.7: accuracy 1 at 0.65; each half the images
    assert result["ece"] == pytest.approx(0.5 * 0.35 + 0.5 * 0.35)
    filled = {round(item["lower"], 1): item for item in result["bins"] if item["count"]}
    assert set(filled) == {0.6, 0.8}
    assert filled[0.8]["accuracy"] == 0.5 and filled[0.8]["confidence"] == pytest.approx(0.85)


def test_majority_baseline_always_answers_the_most_frequent_training_class():
    baselines = evaluation.baseline_metrics(["a", "a", "a", "b", "c"], ["a", "b", "c", "c"], CLASSES, seed=1)

    assert baselines["majority"]["accuracy"] == pytest.approx(1 / 4)
    assert baselines["majority"]["balanced_accuracy"] == pytest.approx(1 / 3)


def test_stratified_baseline_is_reproducible_with_a_seed():
    train, test = ["a"] * 20 + ["b"] * 20 + ["c"] * 20, ["a", "b", "c"] * 10

    first = evaluation.baseline_metrics(train, test, CLASSES, seed=7)["stratified"]
    second = evaluation.baseline_metrics(train, test, CLASSES, seed=7)["stratified"]

    assert first == second
    assert 0.0 <= first["balanced_accuracy"] <= 1.0


def test_unknown_label_is_rejected_with_the_known_classes():
    with pytest.raises(ValueError, match="not classes of this model; classes: a, b, c"):
        evaluation.compute_metrics(["a", "z"], PROBABILITIES[:2], CLASSES)


def test_predictions_table_and_confident_mistakes():
    table = evaluation.predictions_table([f"img{i}" for i in range(6)], LABELS, PROBABILITIES, CLASSES)

    assert list(table.columns) == ["image_id", "label", "predicted", "confidence", "correct",
                                   "prob_a", "prob_b", "prob_c"]
    mistakes = evaluation.confident_mistakes(table, count=5)
    assert list(mistakes["image_id"]) == ["img4", "img2"]  # confidence 0.6, then 0.5


def tiny_model(image_size=8, num_classes=3, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", padding="same", name="last_conv")(x)
    x = keras.layers.Flatten()(x)  # position-dependent, so flips change the output
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def test_the_eight_views_are_the_distinct_rotations_and_reflections():
    image = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3)

    views = [evaluation.view(image, index) for index in range(8)]

    assert len({view.tobytes() for view in views}) == 8
    assert (views[1] == image[:, :, ::-1]).all() and (views[2] == image[:, ::-1]).all()
    assert (views[5] == np.rot90(image, k=-1, axes=(1, 2))).all()  # transpose, then left-right: a quarter turn
    assert (views[6] == np.rot90(image, k=1, axes=(1, 2))).all()


def test_views_8_to_15_are_the_eight_views_of_the_image_turned_by_45_degrees():
    rows, columns = np.mgrid[0:9, 0:9].astype(np.float32)
    # a linear image: bilinear interpolation reproduces it exactly, so away from the borders two turns by
    # 45 degrees are exactly a quarter turn
    image = np.stack([3 * columns + 7 * rows, columns - 2 * rows, np.full_like(rows, 5.0)], axis=-1)[None]
    centre = (slice(None), slice(3, 6), slice(3, 6))

    turned = evaluation.view(image, 8)
    twice = np.asarray(evaluation.turned(turned, 45.0))

    assert twice[centre] == pytest.approx(evaluation.view(image, 6)[centre], abs=1e-4)
    assert not np.allclose(turned[centre], image[centre])
    assert turned[0, 4, 4] == pytest.approx(image[0, 4, 4])  # about the centre
    assert (evaluation.view(image, 13) == evaluation.view(turned, 5)).all()
    with pytest.raises(ValueError, match="0-15"):
        evaluation.view_steps(16)


def test_predictions_of_each_view_and_their_tta_means():
    model = tiny_model()
    images = np.random.default_rng(0).uniform(0, 255, (5, 8, 8, 3)).astype(np.float32)

    views = evaluation.predict_views(model, images, n_views=16, batch_size=2)
    split = evaluation.SplitPredictions(pd.DataFrame({"image_id": list("abcde")}), views)

    expected = [model.predict(evaluation.view(images, index), verbose=0) for index in range(16)]
    assert views.shape == (5, 16, 3) and views[:, 7] == pytest.approx(expected[7], abs=1e-5)
    assert views[:, 12] == pytest.approx(expected[12], abs=1e-5)
    assert split.probabilities("off") == pytest.approx(expected[0], abs=1e-5)
    assert split.probabilities("flips") == pytest.approx(np.mean(expected[:4], axis=0), abs=1e-5)
    assert split.probabilities("dihedral") == pytest.approx(np.mean(expected[:8], axis=0), abs=1e-5)
    assert split.probabilities("dihedral_45") == pytest.approx(np.mean(expected, axis=0), abs=1e-5)
    assert not np.allclose(split.probabilities("dihedral"), split.probabilities("off"), atol=1e-4)
    assert not np.allclose(split.probabilities("dihedral_45"), split.probabilities("dihedral"), atol=1e-4)
    assert evaluation.views_needed("auto") == 16 and evaluation.views_needed("flips") == 4


def test_predict_paths_reads_the_processed_pngs(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    paths = [tmp_path / f"x{index}.png" for index in range(2)]
    for path, image in zip(paths, pixels):
        Image.fromarray(image).save(path)
    model = tiny_model()

    from_files = evaluation.predict_paths(model, paths, image_size=8, n_views=2)

    assert from_files == pytest.approx(evaluation.predict_views(model, pixels.astype(np.float32), n_views=2), abs=1e-6)
    with pytest.raises(TrainingError, match="expected \\(16, 16, 3\\)"):
        evaluation.predict_paths(model, paths, image_size=16)


def split_for_gradcam(model, conv_layer_name):
    """(conv_model, classifier) the way models.gradcam_parts splits a model at its last conv layer."""
    import keras

    conv_output = model.get_layer(conv_layer_name).output
    conv_model = keras.Model(model.inputs, conv_output)
    activations = keras.Input(conv_output.shape[1:])
    x = activations
    after = model.layers[[layer.name for layer in model.layers].index(conv_layer_name) + 1:]
    for layer in after:
        x = layer(x)
    return conv_model, keras.Model(activations, x)


def test_gradcam_maps_have_image_shape_and_unit_range():
    conv_model, classifier = split_for_gradcam(tiny_model(), "last_conv")
    images = np.random.default_rng(1).uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)

    maps = evaluation.gradcam_heatmaps(conv_model, classifier, images)

    assert maps.shape == (3, 8, 8) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0


def test_gradcam_peaks_on_the_region_that_drives_the_class():
    import keras

    inputs = keras.Input((16, 16, 3))
    # one channel = mean brightness, and class 0's score grows with it: evidence is where the image is bright
    conv = keras.layers.Conv2D(1, 1, activation="relu", name="last_conv",
                               kernel_initializer=keras.initializers.Constant(1 / 765))(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(conv)
    outputs = keras.layers.Dense(2, activation="softmax",
                                 kernel_initializer=keras.initializers.Constant([[4.0, -4.0]]))(pooled)
    conv_model, classifier = split_for_gradcam(keras.Model(inputs, outputs), "last_conv")
    image = np.zeros((1, 16, 16, 3), dtype=np.float32)
    image[0, :8, :8] = 255.0

    heatmap = evaluation.gradcam_heatmaps(conv_model, classifier, image, class_indices=[0])[0]

    assert heatmap[:6, :6].mean() > 0.9
    assert heatmap[10:, 10:].max() < 0.1


def test_gradcam_runs_on_the_project_model_split_by_models_gradcam_parts():
    from lib import models

    model = models.build_model("small_cnn", num_classes=3, image_size=16, alpha=0.25)
    conv_model, classifier = models.gradcam_parts(model)
    images = np.random.default_rng(2).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)

    maps = evaluation.gradcam_heatmaps(conv_model, classifier, images)

    assert maps.shape == (2, 16, 16)
    assert maps.min() >= 0.0 and maps.max() <= 1.0


# ---- metrics.json: evaluate -------------------------------------------------------------------------

HAM = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def predicted_split(n_images, prefix, seed, accuracy=0.7, n_views=1, columns=None):
    """SplitPredictions of `n_images` HAM10000-like images (two per lesion) from an over-confident model that is
    right about `accuracy` of the time, the same on every view."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, len(HAM), n_images)
    right = rng.random(n_images) < accuracy
    predicted = np.where(right, true, (true + rng.integers(1, len(HAM), n_images)) % len(HAM))
    logits = rng.normal(0.0, 1.0, (n_images, len(HAM)))
    logits[np.arange(n_images), predicted] += 3.0
    probabilities = statistics.apply_temperature(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 0.4)
    rows = pd.DataFrame({"image_id": [f"{prefix}{index}" for index in range(n_images)],
                         "label": [HAM[index] for index in true],
                         "lesion_id": [f"{prefix}-lesion{index // 2}" for index in range(n_images)],
                         **(columns or {})})
    return evaluation.SplitPredictions(rows, np.repeat(probabilities[:, None], n_views, axis=1))


def evaluate(test, validation, **options):
    return evaluation.evaluate(test, validation, HAM, train_labels=test.rows["label"], **options)


def test_metrics_json_carries_what_the_web_page_reads():
    metrics = evaluate(predicted_split(300, "t", seed=1), predicted_split(300, "v", seed=2), n_resamples=200)

    temperature, point, ood = metrics["temperature"], metrics["operating_point"], metrics["ood"]
    assert set(temperature) == {"value", "fitted_on", "n", "class_bias",
                                *(f"{split}_{score}_{when}" for split in ("validation", "test")
                                                            for score in ("ece", "nll") for when in ("before", "after"))}
    assert temperature["value"] > 1 and temperature["fitted_on"] == "validation" and temperature["n"] == 300
    assert set(point) == {"class", "threshold", "target_sensitivity", "validation", "test"}
    assert point["class"] == "mel" and 0 < point["threshold"] < 1 and point["target_sensitivity"] == 0.85
    assert set(point["validation"]) == {"sensitivity", "specificity"}
    for name in ("sensitivity", "specificity"):
        low, high = point["test"][name]["ci"]
        assert low <= point["test"][name]["value"] <= high
    assert set(ood) == {"score", "threshold", "quantile", "fitted_on", "n"}
    assert ood["score"] == "max_probability" and ood["quantile"] == 0.05 and ood["n"] == 300


def test_temperature_from_validation_calibrates_the_over_confident_model_on_test():
    test = predicted_split(400, "t", seed=3)
    metrics = evaluate(test, predicted_split(400, "v", seed=4), n_resamples=0)

    temperature = metrics["temperature"]
    assert temperature["validation_ece_after"] < temperature["validation_ece_before"]
    assert temperature["test_ece_after"] < 0.75 * temperature["test_ece_before"]
    # what T minimises on validation, and scikit-learn's log-loss of the same probabilities
    assert temperature["validation_nll_after"] < temperature["validation_nll_before"]
    assert temperature["test_nll_after"] < temperature["test_nll_before"]
    assert temperature["test_nll_before"] == pytest.approx(
        skmetrics.log_loss(test.rows["label"], test.views[:, 0], labels=HAM), rel=1e-4)
    # the headline is the calibrated model the web page runs
    assert metrics["calibration"]["ece"] == pytest.approx(temperature["test_ece_after"])
    assert metrics["bootstrap"] is None


def test_operating_point_reaches_its_target_sensitivity_on_validation():
    validation = predicted_split(500, "v", seed=5)

    metrics = evaluate(predicted_split(300, "t", seed=6), validation, n_resamples=0, target_sensitivity=0.9)

    point = metrics["operating_point"]
    probabilities = evaluation.calibrated(validation, metrics["temperature"])
    melanoma = (validation.rows["label"] == "mel").to_numpy()
    flagged = probabilities[:, HAM.index("mel")] >= point["threshold"]
    assert flagged[melanoma].mean() >= 0.9
    assert point["validation"]["sensitivity"] == pytest.approx(flagged[melanoma].mean())
    assert point["validation"]["specificity"] == pytest.approx((~flagged[~melanoma]).mean())


def test_bootstrap_resamples_whole_lesions_and_brackets_the_test_metrics():
    metrics = evaluate(predicted_split(300, "t", seed=7), predicted_split(100, "v", seed=8), n_resamples=300)

    bootstrap = metrics["bootstrap"]
    assert bootstrap["unit"] == "lesion" and bootstrap["n_units"] == 150 and bootstrap["n_resamples"] == 300
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc"):
        low, high = bootstrap["intervals"][name]
        assert low < metrics[name] < high, name
    low, high = bootstrap["intervals"]["melanoma_sensitivity"]
    assert low <= metrics["melanoma"]["sensitivity"] <= high


def test_test_set_fingerprint_ignores_order_and_changes_with_the_images():
    first = evaluation.test_set_fingerprint(["b", "a", "c"])

    assert first == evaluation.test_set_fingerprint(["c", "b", "a"]) and first["n"] == 3
    assert first["sha256"] != evaluation.test_set_fingerprint(["a", "b", "d"])["sha256"]


def with_noisy_flips(split, noisy=4, n_views=8):
    """`split` whose first `noisy` views (4: the image and its flips) are noise and whose other views, up to
    `n_views`, are the model's own: only an average with enough of those knows better than chance."""
    views = np.repeat(split.views[:, :1], n_views, axis=1)
    views[:, :noisy] = np.random.default_rng(0).dirichlet(np.ones(len(HAM)), (len(split.rows), noisy))
    return evaluation.SplitPredictions(split.rows, views)


def test_auto_tta_takes_the_variant_that_scores_best_on_validation():
    test, validation = (with_noisy_flips(predicted_split(200, prefix, seed)) for prefix, seed in (("t", 9), ("v", 10)))

    tta = evaluate(test, validation, tta="auto", n_resamples=100)["tta"]

    scores = tta["validation_balanced_accuracy"]
    assert set(scores) == {"off", "flips", "dihedral"} and scores["dihedral"] > max(scores["off"], scores["flips"])
    assert tta["chosen"] == "dihedral" and tta["views"] == 8
    low, high = tta["one_view"]["intervals"]["balanced_accuracy"]
    assert low < tta["one_view"]["balanced_accuracy"] < high


def test_auto_tta_compares_the_16_views_with_the_45_degree_turns_when_they_were_predicted():
    test, validation = (with_noisy_flips(predicted_split(200, prefix, seed), noisy=8, n_views=16)
                        for prefix, seed in (("t", 9), ("v", 10)))

    tta = evaluate(test, validation, tta="auto", n_resamples=0)["tta"]

    assert set(tta["validation_balanced_accuracy"]) == {"off", "flips", "dihedral", "dihedral_45"}
    assert tta["chosen"] == "dihedral_45" and tta["views"] == 16


def with_skewed_turns(split, seed):
    """`split` (`skewed_split`) with 16 views, each the model's answer plus its own noise, the 8 turned ones also
    leaning toward nv: at the argmax the lean costs more than 8 more views add; once class biases undo it, the
    average of 16 beats that of 8."""
    rng = np.random.default_rng(seed)
    log_probabilities = np.log(split.views[:, 0])
    lean = np.eye(len(HAM))[HAM.index("nv")] * 2.0
    views = np.exp(np.stack([log_probabilities + lean * (index >= 8) + rng.normal(0, 1.5, log_probabilities.shape)
                             for index in range(16)], axis=1))
    return evaluation.SplitPredictions(split.rows, views / views.sum(axis=2, keepdims=True))


def test_with_class_biases_auto_tta_chooses_the_views_on_held_out_validation_after_the_biases():
    validation = with_skewed_turns(skewed_split(1500, "v", seed=31), seed=32)

    plain = evaluation.choose_tta("auto", validation, HAM)
    biased = evaluation.choose_tta("auto", validation, HAM, class_bias="auto")

    scores, held_out = biased["validation_balanced_accuracy"], biased["held_out_balanced_accuracy"]
    assert plain["held_out_balanced_accuracy"] is None and plain["chosen"] != "dihedral_45"
    assert scores["dihedral_45"] < scores["dihedral"] and held_out["dihedral_45"] > held_out["dihedral"]
    assert biased["chosen"] == "dihedral_45"
    true = evaluation.label_indices(validation.rows["label"], HAM)
    assert held_out["dihedral"] == pytest.approx(evaluation.held_out_score(
        true, validation.probabilities("dihedral"), HAM, "auto"))
    assert held_out["off"] == pytest.approx(np.mean([evaluation.held_out_score(true, validation.views[:, index], HAM,
                                                                               "auto") for index in range(16)]))


def test_the_headline_averages_the_chosen_views_with_a_temperature_fitted_to_them_and_one_view_stands_beside():
    test, validation = (with_noisy_flips(predicted_split(200, prefix, seed)) for prefix, seed in (("t", 9), ("v", 10)))

    metrics = evaluate(test, validation, tta="auto", n_resamples=0)

    test_true, validation_true = (evaluation.label_indices(split.rows["label"], HAM) for split in (test, validation))
    assert metrics["tta"]["chosen"] == "dihedral"
    assert metrics["temperature"]["value"] == pytest.approx(
        statistics.fit_temperature(validation_true, validation.probabilities("dihedral")))
    averaged = evaluation.calibrated(test, metrics["temperature"], "dihedral")
    assert metrics["balanced_accuracy"] == pytest.approx(
        skmetrics.balanced_accuracy_score(test_true, averaged.argmax(axis=1)))
    assert metrics["calibration"]["ece"] == pytest.approx(evaluation.calibration(test_true, averaged)["ece"])
    assert metrics["tta"]["one_view"]["balanced_accuracy"] == pytest.approx(
        skmetrics.balanced_accuracy_score(test_true, test.views[:, 0].argmax(axis=1)))
    assert metrics["balanced_accuracy"] > metrics["tta"]["one_view"]["balanced_accuracy"] + 0.2  # noise in view 0
    # the web page's thresholds are fitted to what it computes: the averaged, calibrated views
    validation_averaged = evaluation.calibrated(validation, metrics["temperature"], "dihedral")
    assert metrics["ood"]["threshold"] == pytest.approx(np.quantile(validation_averaged.max(axis=1), 0.05), abs=1e-6)


def test_auto_tta_keeps_one_view_when_more_views_do_not_help():
    test, validation = predicted_split(100, "t", seed=11, n_views=8), predicted_split(100, "v", seed=12, n_views=8)

    tta = evaluate(test, validation, tta="auto", n_resamples=0)["tta"]

    assert tta["chosen"] == "off" and tta["one_view"] is None


def turned_differently(split, other_accuracies, seed):
    """`split` whose view 0 is its own predictions, followed by one view per entry of `other_accuracies`: the
    image turned another way, confidently right about that share of the time, else confidently taken for the one
    other class it resembles."""
    rng = np.random.default_rng(seed)
    true = evaluation.label_indices(split.rows["label"], HAM)
    lookalike = (true + rng.integers(1, len(HAM), len(true))) % len(HAM)
    views = [split.views[:, 0]]
    for accuracy in other_accuracies:
        answer = np.where(rng.random(len(true)) < accuracy, true, lookalike)
        views.append(np.eye(len(HAM))[answer] * 0.6 + rng.dirichlet(np.ones(len(HAM)), len(true)) * 0.4)
    return evaluation.SplitPredictions(split.rows, np.stack(views, axis=1))


def test_orientation_scores_are_the_balanced_accuracy_of_each_view_alone():
    split = turned_differently(predicted_split(300, "v", seed=20, accuracy=0.9), [0.5, 0.5, 0.5], seed=30)

    scores = evaluation.orientation_scores(split, HAM)

    true = evaluation.label_indices(split.rows["label"], HAM)
    assert scores == [pytest.approx(skmetrics.balanced_accuracy_score(true, split.views[:, index].argmax(axis=1)))
                      for index in range(4)]
    assert scores[0] > 0.8 > max(scores[1:])
    assert evaluation.orientation_scores(predicted_split(50, "v", seed=1), HAM) is None


def test_auto_tta_weighs_one_view_by_its_mean_over_the_orientations_not_the_one_it_was_chosen_on():
    validation = turned_differently(predicted_split(400, "v", seed=21, accuracy=0.9), [0.55] * 7, seed=40)
    test = turned_differently(predicted_split(200, "t", seed=22, accuracy=0.9), [0.55] * 7, seed=60)

    tta = evaluate(test, validation, tta="auto", n_resamples=0)["tta"]

    scores, orientations = tta["validation_balanced_accuracy"], tta["orientations"]
    best_average = max(("flips", "dihedral"), key=scores.get)
    assert scores["off"] > scores[best_average] > np.mean(orientations["validation"])  # as stored, off would win
    assert tta["chosen"] == best_average
    test_true = evaluation.label_indices(test.rows["label"], HAM)
    assert len(orientations["test"]) == 8
    assert orientations["test"][0] == pytest.approx(skmetrics.balanced_accuracy_score(test_true,
                                                                                      test.views[:, 0].argmax(axis=1)))


# HAM10000's class mix, and a model that over-answers nv and under-answers the rare classes by these log factors
HAM_SHARES = np.array([0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])
SKEW = np.array([-0.5, 0.0, 0.3, -1.5, 0.0, 1.5, -1.0])


def skewed_split(n_images, prefix, seed, skew=SKEW):
    """SplitPredictions of `n_images` images in HAM10000's class mix, from a model whose log-probabilities are
    the true class's evidence plus `skew`: calibrated for balanced accuracy only after removing the skew."""
    rng = np.random.default_rng(seed)
    true = rng.choice(len(HAM), n_images, p=HAM_SHARES)
    logits = rng.normal(0.0, 1.0, (n_images, len(HAM)))
    logits[np.arange(n_images), true] += 2.0
    probabilities = np.exp(logits + skew) / np.exp(logits + skew).sum(1, keepdims=True)
    rows = pd.DataFrame({"image_id": [f"{prefix}{index}" for index in range(n_images)],
                         "label": [HAM[index] for index in true],
                         "lesion_id": [f"{prefix}-lesion{index}" for index in range(n_images)]})
    return evaluation.SplitPredictions(rows, probabilities[:, None])


def test_class_biases_fitted_on_validation_undo_the_skew_and_raise_test_balanced_accuracy():
    test, validation = skewed_split(3000, "t", seed=11), skewed_split(3000, "v", seed=12)

    plain = evaluate(test, validation, n_resamples=0)
    biased = evaluate(test, validation, n_resamples=0, class_bias="auto")

    block = biased["temperature"]["class_bias"]
    assert plain["temperature"]["class_bias"] is None
    assert block["applied"] and block["cross_validation"]["with"] > block["cross_validation"]["without"] + 0.05
    bias = np.array(list(block["bias"].values()))
    assert bias == pytest.approx((-SKEW - np.mean(-SKEW)) / biased["temperature"]["value"], abs=0.25)
    assert biased["balanced_accuracy"] > plain["balanced_accuracy"] + 0.05
    assert biased["per_class"]["df"]["recall"] > plain["per_class"]["df"]["recall"]
    # every figure, the threshold and the cut-off included, comes from the biased probabilities the page shows
    shifted = evaluation.calibrated(validation, biased["temperature"])
    assert shifted == pytest.approx(statistics.apply_temperature(
        validation.views[:, 0], biased["temperature"]["value"], bias))
    assert biased["ood"]["threshold"] == pytest.approx(np.quantile(shifted.max(1), 0.05), abs=1e-6)


def test_validation_decisions_are_evaluates_made_without_the_test_split():
    validation = with_noisy_flips(skewed_split(600, "v", seed=15))
    test = with_noisy_flips(skewed_split(600, "t", seed=16))

    decisions = evaluation.validation_decisions(validation, HAM, tta="auto", class_bias="auto",
                                                class_weight={"mel": 1.5})
    metrics = evaluate(test, validation, n_resamples=0, tta="auto", class_bias="auto", class_weight={"mel": 1.5})

    assert decisions["tta"]["chosen"] == metrics["tta"]["chosen"] == "dihedral"
    assert decisions["temperature"] == metrics["temperature"]["value"]
    assert decisions["class_bias"] == metrics["temperature"]["class_bias"] and decisions["class_bias"]["applied"]
    without = evaluation.validation_decisions(None, HAM, tta="auto", class_bias="auto")
    assert without["tta"]["chosen"] == "off" and without["temperature"] is None and without["class_bias"] is None


def test_class_bias_on_applies_it_and_auto_needs_every_class_twice_to_decide():
    test, validation = skewed_split(400, "t", seed=13), skewed_split(400, "v", seed=14)
    assert evaluate(test, validation, n_resamples=0, class_bias="on")["temperature"]["class_bias"]["applied"]

    rows = validation.rows.copy()
    lone = rows.index[rows["label"] == "df"]
    rows.loc[lone[1:], "label"] = "nv"  # one df image left: no two halves can both hold one
    one_df = evaluation.SplitPredictions(rows, validation.views)
    block = evaluate(test, one_df, n_resamples=0, class_bias="auto")["temperature"]["class_bias"]
    assert block["cross_validation"] is None and not block["applied"]


def test_class_bias_weights_balance_the_classes_and_keep_the_training_emphasis():
    true = np.array([0, 0, 0, 1, 2, 2])

    weights = evaluation.class_bias_weights(true, ["a", "b", "c", "d"], {"c": 1.5})

    # n / (C * count): 6 / (4 * 3), 6 / 4, 6 / 8 * 1.5, and d has no images
    assert weights == pytest.approx([0.5, 1.5, 1.125, 0.0])
    assert evaluation.class_bias_weights(true, ["a", "b", "c", "d"], "balanced") == pytest.approx([0.5, 1.5, 0.75, 0])


def test_without_validation_nothing_is_fitted_and_a_note_says_why():
    metrics = evaluate(predicted_split(100, "t", seed=13), None, tta="auto", n_resamples=50)

    assert metrics["temperature"] is None and metrics["operating_point"] is None and metrics["ood"] is None
    assert metrics["validation"] is None and metrics["tta"]["chosen"] == "off"
    assert any("no validation split" in note for note in metrics["notes"])


def test_validation_that_is_the_test_split_is_noted_as_optimistic():
    test = predicted_split(100, "t", seed=14)

    metrics = evaluate(test, test, n_resamples=0)

    assert any("test_as_validation" in note and "optimistic" in note for note in metrics["notes"])


def test_subgroups_give_counts_and_flag_small_groups():
    columns = {"age": ["35.0"] * 150 + ["80.0"] * 140 + [""] * 10, "sex": ["female", "male"] * 150,
               "localization": ["back"] * 300, "dx_type": ["histo"] * 300}
    test = predicted_split(300, "t", seed=15, columns=columns)

    subgroups = evaluate(test, predicted_split(200, "v", seed=16), n_resamples=0)["subgroups"]

    groups = {(group["by"], group["group"]): group for group in subgroups["groups"]}
    # one body site and one kind of diagnosis: nothing to compare there
    assert set(groups) == {("age band", "30-44"), ("age band", "75 and over"), ("age band", "unknown"),
                           ("sex", "female"), ("sex", "male")}
    assert [group["group"] for group in subgroups["groups"][:3]] == ["30-44", "75 and over", "unknown"]
    assert groups[("age band", "unknown")]["n"] == 10 and groups[("age band", "unknown")]["small"]
    female = groups[("sex", "female")]
    female_rows = test.rows[test.rows["sex"] == "female"]
    assert female["n"] == 150 and female["n_positive"] == (female_rows["label"] == "mel").sum()
    assert female["small"] == (female["n_positive"] < evaluation.SMALL_GROUP_MELANOMAS)
    predicted = test.probabilities().argmax(axis=1)[female_rows.index]
    truth = evaluation.label_indices(female_rows["label"], HAM)
    assert female["balanced_accuracy"] == pytest.approx(skmetrics.balanced_accuracy_score(truth, predicted))
    assert subgroups["class"] == "mel" and subgroups["min_images"] == evaluation.SMALL_GROUP_IMAGES


def test_no_subgroups_without_metadata_columns():
    metrics = evaluate(predicted_split(60, "t", seed=17), predicted_split(60, "v", seed=18), n_resamples=0)

    assert metrics["subgroups"] is None


def test_external_dataset_is_scored_without_the_classes_the_model_does_not_know(tmp_path):
    model = tiny_model()
    pixels = np.random.default_rng(4).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    for index, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / f"e{index}.png")
    used = pd.DataFrame({"image_id": [f"e{index}" for index in range(4)], "label": ["a", "b", "c", "zzz"],
                         "abs_path": [str(tmp_path / f"e{index}.png") for index in range(4)]})
    skipped = pd.DataFrame({"source_path": ["broken.jpg"], "reason": ["unreadable"]})
    temperature = {"value": 2.0}

    metrics, table = evaluation.score_external(model, used, skipped, CLASSES, 8, temperature, "local", "other")
    flips, flips_table = evaluation.score_external(model, used, skipped, CLASSES, 8, temperature, "local", "other",
                                                   tta="flips")

    assert metrics["n_test"] == 3 and metrics["n_unknown_label"] == 1 and metrics["n_skipped"] == 1
    assert metrics["source"] == "local" and metrics["dataset"] == "other" and metrics["tta"] == "off"
    raw = model.predict(pixels[:3].astype(np.float32), verbose=0)
    assert table[["prob_a", "prob_b", "prob_c"]].to_numpy() == pytest.approx(
        statistics.apply_temperature(raw, 2.0), abs=1e-5)
    # with the run's views: the mean over the image and its flips, as on test
    averaged = evaluation.predict_views(model, pixels[:3], n_views=4).mean(axis=1)
    assert flips["tta"] == "flips" and flips_table[["prob_a", "prob_b", "prob_c"]].to_numpy() == pytest.approx(
        statistics.apply_temperature(averaged, 2.0), abs=1e-5)


def test_binary_labels_screen_for_malignant_with_the_binary_auc_interval():
    def binary_split(prefix, seed):
        rng = np.random.default_rng(seed)
        malignant = rng.random(200) < 0.45
        score = np.clip(np.where(malignant, 0.65, 0.35) + rng.normal(0, 0.2, 200), 0.01, 0.99)
        rows = pd.DataFrame({"image_id": [f"{prefix}{index}" for index in range(200)],
                             "label": np.where(malignant, "malignant", "benign"),
                             "lesion_id": [f"{prefix}{index}" for index in range(200)]})
        return evaluation.SplitPredictions(rows, np.column_stack([1 - score, score])[:, None])

    metrics = evaluation.evaluate(binary_split("t", 1), binary_split("v", 2), ["benign", "malignant"],
                                  train_labels=["benign", "malignant"], n_resamples=300)

    assert metrics["operating_point"]["class"] == "malignant"
    assert metrics["bootstrap"]["unit"] == "image"
    low, high = metrics["bootstrap"]["intervals"]["roc_auc"]
    assert low < metrics["roc_auc"] < high
