"""Every figure of a run: the data (class balance, samples per class, augmentation), training curves, and the
evaluation (confusion matrices, ROC curves, reliability diagram, image grids of confident mistakes and Grad-CAM
overlays). Each function saves a PNG and returns the matplotlib Figure, which a notebook shows inline."""

import logging
import sys
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:
    # scripts and tests have no display; in a notebook the inline backend shows the figures
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from sklearn import metrics as skmetrics  # noqa: E402

from lib import evaluation  # noqa: E402

logger = logging.getLogger(__name__)


def save(figure, out_path):
    """Write `figure` as PNG to `out_path` (parents created) and return the figure."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=100, bbox_inches="tight")
    logger.info("wrote %s", out_path)
    return figure


def confusion_matrix(confusion, class_names, out_path, normalize=False):
    """Heat map of a confusion matrix (rows true, columns predicted), as counts or, with `normalize`,
    each row divided by its total (the diagonal is then per-class recall)."""
    confusion = np.asarray(confusion, dtype=float)
    if normalize:
        totals = confusion.sum(axis=1, keepdims=True)
        confusion = np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
    size = max(4.0, 0.7 * len(class_names) + 2)
    figure, axes = plt.subplots(figsize=(size, size * 0.85))
    sns.heatmap(confusion, annot=True, fmt=".2f" if normalize else ".0f", cmap="Blues", square=True,
                xticklabels=class_names, yticklabels=class_names, vmin=0, vmax=1 if normalize else None,
                cbar=False, ax=axes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Confusion matrix, row-normalised (recall on the diagonal)" if normalize
                   else "Confusion matrix (counts)")
    return save(figure, out_path)


def roc_curves(labels, probabilities, class_names, out_path):
    """One-vs-rest ROC curve per class present in `labels` (binary: the positive class only, as in
    `evaluation.roc_auc`), with AUC
    in the legend. `labels` are class names, `probabilities` (N, C) in `class_names` order."""
    probabilities = np.asarray(probabilities, dtype=float)
    position = {name: index for index, name in enumerate(class_names)}
    true_indices = np.array([position[label] for label in labels])
    indicator = np.column_stack([true_indices == index for index in range(len(class_names))]).astype(int)
    shown = ([evaluation.positive_class_index(class_names)] if len(class_names) == 2
             else range(len(class_names)))
    figure, axes = plt.subplots(figsize=(6, 5.5))
    for index in shown:
        if 0 < indicator[:, index].sum() < len(indicator):
            false_positive, true_positive, _ = skmetrics.roc_curve(indicator[:, index], probabilities[:, index])
            auc = skmetrics.auc(false_positive, true_positive)
            axes.plot(false_positive, true_positive, label=f"{class_names[index]} (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set_xlabel("false positive rate (1 - specificity)")
    axes.set_ylabel("true positive rate (sensitivity)")
    axes.set_title("ROC curves, one class vs the rest")
    axes.legend(loc="lower right", fontsize="small")
    return save(figure, out_path)


def reliability_diagram(calibration, out_path, title="Reliability diagram"):
    """Accuracy against mean confidence per confidence bin (from `evaluation.calibration`), with the
    perfect-calibration diagonal, bin counts below and the ECE after the `title`."""
    bins = [item for item in calibration["bins"] if item["count"]]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 1]})
    width = 1.0 / calibration["n_bins"]
    top.bar([item["lower"] for item in bins], [item["accuracy"] for item in bins], width=width,
            align="edge", edgecolor="black", alpha=0.7, label="accuracy")
    top.plot([item["confidence"] for item in bins], [item["accuracy"] for item in bins], "o", color="C3",
             label="mean confidence")
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.set_title(f"{title} (ECE {calibration['ece']:.3f})")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar([item["lower"] for item in bins], [item["count"] for item in bins], width=width,
               align="edge", edgecolor="black", color="grey")
    bottom.set_xlabel("confidence of the predicted class")
    bottom.set_ylabel("images")
    bottom.set_xlim(0, 1)
    return save(figure, out_path)


def class_distribution(manifest, out_path):
    """Bar chart of images per class (a manifest's `label`), one bar per split."""
    order = sorted(manifest["label"].unique())
    splits = [split for split in ("train", "validation", "test") if split in set(manifest["split"])]
    figure, axis = plt.subplots(figsize=(max(5, 1.1 * len(order)), 3.5))
    sns.countplot(data=manifest, x="label", hue="split", order=order, hue_order=splits, ax=axis)
    axis.set(xlabel="class", ylabel="images", title="Images per class and split")
    figure.tight_layout()
    return save(figure, out_path)


def samples_per_class(images_by_class, out_path):
    """A grid with one row per class: {class: uint8 RGB images (n, S, S, 3)}, rows as long as the longest."""
    columns = max([len(images) for images in images_by_class.values()] + [1])
    figure, axes = plt.subplots(len(images_by_class), columns, figsize=(1.6 * columns, 1.7 * len(images_by_class)),
                                squeeze=False)
    for row, (label, images) in enumerate(images_by_class.items()):
        for column, axis in enumerate(axes[row]):
            axis.axis("off")
            if column < len(images):
                axis.imshow(images[column])
        axes[row, 0].set_title(label, loc="left", fontsize=9)
    figure.tight_layout()
    return save(figure, out_path)


def augmentation_examples(originals, augmented, out_path):
    """Training images (top row) above their augmented versions (bottom row), float RGB [0, 255]."""
    figure, axes = plt.subplots(2, len(originals), figsize=(1.8 * len(originals), 3.8), squeeze=False)
    for column, (original, changed) in enumerate(zip(originals, augmented)):
        for row, picture in enumerate((original, changed)):
            axes[row, column].imshow(np.clip(picture, 0, 255).astype(np.uint8))
            axes[row, column].axis("off")
    axes[0, 0].set_title("original", loc="left", fontsize=9)
    axes[1, 0].set_title("augmented", loc="left", fontsize=9)
    figure.tight_layout()
    return save(figure, out_path)


def training_curves(history, out_path, best_epoch=None):
    """One panel per metric of a Keras CSVLogger table (pandas DataFrame) that has a `val_` twin (loss,
    accuracy, balanced accuracy ...), training and validation against epoch, plus the learning rate when logged;
    a dotted line marks `best_epoch` (1-based), the checkpoint kept."""
    names = [name for name in history.columns if f"val_{name}" in history.columns]
    if "learning_rate" in history.columns:
        names.append("learning_rate")
    if not names:
        raise ValueError(f"history has no metric with a val_ twin; columns: {', '.join(history.columns)}")
    epochs = history["epoch"] + 1 if "epoch" in history.columns else np.arange(1, len(history) + 1)
    figure, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5), squeeze=False)
    for panel, name in zip(axes[0], names):
        if name == "learning_rate":
            panel.plot(epochs, history[name], marker=".")
            panel.set_yscale("log")
        else:
            panel.plot(epochs, history[name], marker=".", label="training")
            panel.plot(epochs, history[f"val_{name}"], marker=".", label="validation")
            panel.legend(fontsize="small")
        if best_epoch is not None:
            panel.axvline(best_epoch, color="grey", linestyle=":")
        panel.set_title(name)
        panel.set_xlabel("epoch")
    return save(figure, out_path)


def image_grid(images, titles, out_path, columns=4, overlays=None):
    """Images (N, S, S, 3) with values in [0, 255] in a grid with one title each; `overlays` (N, S, S)
    in [0, 1] (Grad-CAM maps) are drawn over them in a translucent jet colour map."""
    if len(images) == 0:
        raise ValueError(f"no images to draw in {out_path}")
    columns = min(columns, len(images))
    rows = int(np.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.3 * rows), squeeze=False)
    for index, panel in enumerate(axes.flat):
        panel.axis("off")
        if index >= len(images):
            continue
        panel.imshow(np.clip(np.asarray(images[index]), 0, 255).astype(np.uint8))
        if overlays is not None:
            panel.imshow(overlays[index], cmap="jet", alpha=0.4, vmin=0, vmax=1)
        panel.set_title(titles[index], fontsize="small")
    figure.tight_layout()
    return save(figure, out_path)
