"""Every evaluation figure is written as a non-empty PNG."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib import evaluation, plots

CLASSES = ["bkl", "mel", "nv"]
LABELS = ["bkl", "mel", "mel", "nv", "nv", "nv"]
PROBABILITIES = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6],
                          [0.1, 0.1, 0.8], [0.3, 0.2, 0.5], [0.5, 0.1, 0.4]])


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def assert_png(path):
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 50


@pytest.mark.parametrize("normalize", [False, True])
def test_confusion_matrix_is_written(tmp_path, normalize):
    metrics = evaluation.compute_metrics(LABELS, PROBABILITIES, CLASSES)

    plots.confusion_matrix(metrics["confusion_matrix"], CLASSES, tmp_path / "plots" / "cm.png", normalize=normalize)

    assert_png(tmp_path / "plots" / "cm.png")


@pytest.mark.parametrize("classes, labels, probabilities", [
    (CLASSES, LABELS, PROBABILITIES),
    (["benign", "malignant"], ["benign", "malignant", "malignant"], np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])),
])
def test_roc_curves_are_written_for_multiclass_and_binary(tmp_path, classes, labels, probabilities):
    plots.roc_curves(labels, probabilities, classes, tmp_path / "roc.png")

    assert_png(tmp_path / "roc.png")


def test_reliability_diagram_is_written(tmp_path):
    calibration = evaluation.calibration(evaluation.label_indices(LABELS, CLASSES), PROBABILITIES, n_bins=10)

    plots.reliability_diagram(calibration, tmp_path / "reliability.png")

    assert_png(tmp_path / "reliability.png")


def test_training_curves_pair_each_metric_with_its_validation_twin(tmp_path):
    history = pd.DataFrame({"epoch": [0, 1, 2], "accuracy": [0.5, 0.6, 0.7], "loss": [1.0, 0.8, 0.6],
                            "val_accuracy": [0.4, 0.5, 0.55], "val_loss": [1.1, 0.9, 0.85],
                            "learning_rate": [1e-3, 1e-3, 5e-4]})

    figure = plots.training_curves(history, tmp_path / "training_curves.png")

    assert_png(tmp_path / "training_curves.png")
    assert sorted(axes.get_title() for axes in figure.axes) == ["accuracy", "learning_rate", "loss"]


def test_training_curves_without_validation_metrics_say_so(tmp_path):
    with pytest.raises(ValueError, match="no metric with a val_ twin"):
        plots.training_curves(pd.DataFrame({"epoch": [0], "loss": [1.0]}), tmp_path / "t.png")


def test_image_grid_draws_mistakes_and_gradcam_overlays(tmp_path):
    images = np.random.default_rng(0).uniform(0, 255, (5, 16, 16, 3))
    overlays = np.random.default_rng(1).uniform(0, 1, (5, 16, 16))
    titles = [f"true nv, predicted mel ({p:.2f})" for p in np.linspace(0.5, 0.9, 5)]

    plots.image_grid(images, titles, tmp_path / "mistakes.png", columns=3)
    plots.image_grid(images, titles, tmp_path / "gradcam.png", overlays=overlays)

    assert_png(tmp_path / "mistakes.png")
    assert_png(tmp_path / "gradcam.png")


def test_data_figures_are_written(tmp_path, run_folder):
    from lib import artifacts, inputs

    manifest = artifacts.read_manifest(run_folder)
    plots.class_distribution(manifest, tmp_path / "classes.png")
    by_class = {label: inputs.load_processed(group["abs_path"][:3]) for label, group in manifest.groupby("label")}
    plots.samples_per_class(by_class, tmp_path / "samples.png")
    originals = inputs.load_processed(manifest["abs_path"][:4]).astype("float32")
    plots.augmentation_examples(originals, originals[:, ::-1], tmp_path / "augmentation.png")
    for name in ("classes.png", "samples.png", "augmentation.png"):
        assert_png(tmp_path / name)
