"""Evaluation metrics against values computed by hand, predictions, and Grad-CAM on tiny models."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib import evaluation
from lib.errors import ImageError

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


def test_summary_holds_the_stable_metrics_json_keys():
    summary = evaluation.summarize(LABELS, PROBABILITIES, CLASSES, train_labels=LABELS, seed=0,
                                   tta_probabilities=PROBABILITIES)

    for key in ("n_test", "accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "top2_accuracy",
                "per_class", "baselines", "calibration", "confusion_matrix", "classes", "tta", "melanoma"):
        assert key in summary
    assert set(summary["baselines"]) == {"majority", "stratified"}
    assert summary["tta"]["accuracy"] == summary["accuracy"]


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


def test_tta_averages_the_model_over_the_four_flips():
    model = tiny_model()
    images = np.random.default_rng(0).uniform(0, 255, (5, 8, 8, 3)).astype(np.float32)

    averaged = evaluation.predict_probabilities(model, images, batch_size=2, tta=True)

    views = [images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]]
    expected = np.mean([model.predict(np.ascontiguousarray(view), verbose=0) for view in views], axis=0)
    assert averaged == pytest.approx(expected, abs=1e-5)
    assert not np.allclose(averaged, evaluation.predict_probabilities(model, images), atol=1e-4)


def test_images_are_read_from_manifest_paths_relative_to_the_run(tmp_path):
    (tmp_path / "data" / "processed").mkdir(parents=True)
    pixels = np.full((8, 8, 3), 200, dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "data" / "processed" / "x1.png")
    pd.DataFrame({"image_id": ["x1", "x2"], "label": ["a", "b"], "split": ["test", "train"],
                  "path": ["data/processed/x1.png", "data/processed/x2.png"]}).to_csv(
        tmp_path / "data" / "manifest.csv", index=False)

    table = evaluation.read_manifest(tmp_path / "data" / "manifest.csv", split="test")
    images = evaluation.load_images(table["abs_path"], image_size=8)

    assert list(table["image_id"]) == ["x1"]
    assert images.shape == (1, 8, 8, 3) and images.dtype == np.float32 and images.max() == 200.0
    with pytest.raises(ImageError, match="expects 16x16"):
        evaluation.load_images(table["abs_path"], image_size=16)


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
