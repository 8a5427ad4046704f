"""The evaluation's files in a run folder: metrics.json, predictions.csv, report.md with its model card,
and the TensorBoard HParams summary that lists the run with its parameters and final test metrics."""

import json
import logging
from pathlib import Path

import pandas as pd
import yaml

logger = logging.getLogger(__name__)

# Test metrics shown as scalars in TensorBoard's HParams dashboard (tag = "test_" + key).
HPARAMS_TEST_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "top3_accuracy")
# Metrics the Keras TensorBoard callback writes under logs/validation during training.
HPARAMS_VALIDATION_METRICS = ("epoch_accuracy", "epoch_loss")
# Ends the HParams event file's name, so a rerun finds and replaces only its own summary.
HPARAMS_FILE_SUFFIX = ".hparams.v2"
# Rows of the metrics table in report.md: (metrics.json key, label).
TABLE_ROWS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy (mean recall)"),
              ("macro_f1", "macro F1"), ("roc_auc", "ROC AUC (macro one-vs-rest, or binary)"),
              ("top2_accuracy", "top-2 accuracy"), ("top3_accuracy", "top-3 accuracy"))


def read_params(run_dir):
    """The run's resolved parameters (run_dir/params.yaml) as a nested dict."""
    path = Path(run_dir) / "params.yaml"
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def flatten_params(nested, prefix=""):
    """{"model": {"backbone": "vgg19"}} -> {"model.backbone": "vgg19"}; lists and None stay values."""
    flat = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def write_json(data, out_path):
    """Write `data` as indented JSON (keys in the order built, so the file diffs cleanly); return the path."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %s", out_path)
    return out_path


def write_predictions(table, out_path):
    """Write an `evaluation.predictions_table` as CSV; return the path."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_path, index=False, float_format="%.6f")
    logger.info("wrote %s", out_path)
    return out_path


def hparam_value(value):
    """HParams accept only bool, int, float and str: other values (None, lists, dicts) become their text."""
    return value if isinstance(value, (bool, int, float, str)) else json.dumps(value)


def write_hparams(log_dir, run_name, flat_params, metrics):
    """Write the run's parameters and final test metrics for TensorBoard's HParams dashboard.

    `log_dir` is the run's logs/ folder, so the training callback's logs/validation scalars belong to the
    same session (metric group "validation"); `tensorboard --logdir outputs/` then lists every run, its
    flattened parameters (`flat_params`) and test metrics (tags test_accuracy, test_balanced_accuracy ...).
    An earlier summary written here is replaced; other event files are left alone. Returns the test metric tags
    written."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    hparams = {name: hparam_value(value) for name, value in sorted(flat_params.items())}
    declared = [hp.Metric(tag, group="validation", display_name=f"validation {tag}")
                for tag in HPARAMS_VALIDATION_METRICS]
    declared += [hp.Metric(f"test_{key}", display_name=f"test {key}") for key in HPARAMS_TEST_METRICS]
    log_dir = Path(log_dir)
    # a rerun of the evaluation replaces its own summary, recognised by its file name suffix
    for previous in log_dir.glob(f"events.out.tfevents.*{HPARAMS_FILE_SUFFIX}"):
        logger.info("replacing the earlier HParams summary %s", previous)
        previous.unlink()
    written = []
    writer = tf.summary.create_file_writer(str(log_dir), filename_suffix=HPARAMS_FILE_SUFFIX)
    with writer.as_default():
        hp.hparams_config(hparams=[hp.HParam(name) for name in hparams], metrics=declared)
        hp.hparams(hparams, trial_id=run_name)
        for key in HPARAMS_TEST_METRICS:
            if metrics.get(key) is not None:
                tf.summary.scalar(f"test_{key}", metrics[key], step=0)
                written.append(f"test_{key}")
    writer.close()
    logger.info("wrote HParams summary for %s to %s", run_name, log_dir)
    return written


def markdown_table(table):
    """A DataFrame as a Markdown table, index first (pandas' to_markdown needs `tabulate`, not installed)."""
    header = [str(table.index.name or "")] + [str(column) for column in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for index, row in table.iterrows():
        lines.append("| " + " | ".join([str(index)] + ["" if pd.isna(value) else str(value) for value in row])
                     + " |")
    return "\n".join(lines)


def number(value, digits=3):
    """A metric for a Markdown table: rounded, or an n/a dash for a missing value."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def metrics_table(metrics):
    """Markdown table of the headline metrics, the model beside its baselines and TTA when present."""
    columns = [("model", metrics)]
    if metrics.get("tta"):
        columns.append(("model + TTA (flips)", metrics["tta"]))
    for name, values in (metrics.get("baselines") or {}).items():
        columns.append((f"{name} baseline", values))
    lines = ["| metric | " + " | ".join(name for name, _ in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for key, label in TABLE_ROWS:
        if key in metrics:
            lines.append(f"| {label} | " + " | ".join(number(values.get(key)) for _, values in columns) + " |")
    return "\n".join(lines)


def per_class_table(metrics):
    """Markdown table of precision, recall, F1, support and one-vs-rest AUC per class."""
    lines = ["| class | precision | recall (sensitivity) | F1 | ROC AUC | support |", "|---|---|---|---|---|---|"]
    for name, values in metrics["per_class"].items():
        auc = (metrics.get("roc_auc_per_class") or {}).get(name)
        lines.append(f"| {name} | {number(values['precision'])} | {number(values['recall'])} | "
                     f"{number(values['f1'])} | {number(auc)} | {values['support']} |")
    return "\n".join(lines)


def model_card(params, class_names, metrics):
    """The model card section of report.md: intended use, data, metrics, known limits."""
    data = params.get("data", {})
    model = params.get("model", {})
    external = metrics.get("external")
    limits = [
        (f"Also measured on one external dataset (`{external['dataset']}`, above); other cameras, clinics, skin "
         "types and non-dermoscopic phone photos remain unmeasured." if external else
         "Trained and tested on one dataset; accuracy on other cameras, clinics, skin types or "
         "non-dermoscopic phone photos is unknown until measured on an external test set (evaluate.external)."),
        "Class imbalance: plain accuracy rewards predicting the majority class; read balanced accuracy, "
        "per-class recall and the baselines beside it.",
        "Probabilities are not calibrated risks; see the reliability diagram and ECE.",
    ]
    if data.get("dataset") == "isic_binary" or set(class_names) == {"benign", "malignant"}:
        limits.append("Recipe B's dataset (fanconic/skin-cancer-malignant-vs-benign) is mostly copies of "
                      "HAM10000 images (nevi as benign, melanomas as malignant): a model can learn the image "
                      "source instead of the lesion. Telling HAM10000 copies from other images alone scores "
                      "about 78% test accuracy; always answering benign scores 54.5%.")
    if data.get("test_as_validation"):
        limits.append("The test split was also the validation split that chose the checkpoint (as in recipe B), "
                      "so the test numbers are optimistic.")
    if data.get("dataset") == "ham10000":
        limits.append("HAM10000 has several images per lesion; the split keeps each lesion in one subset, "
                      "and splits that ignore lesion_id report inflated numbers.")
    melanoma = metrics.get("melanoma")
    screening = (f" {melanoma['class']} sensitivity {number(melanoma['sensitivity'])}, specificity "
                 f"{number(melanoma['specificity'])}." if melanoma else "")
    return "\n".join([
        "## Model card",
        "",
        "**Intended use.** Research and education on skin-lesion image classification. This model is NOT a "
        "medical device and must not be used for diagnosis or to decide whether to see a doctor.",
        "",
        f"**Model.** Backbone `{model.get('backbone')}` (weights `{model.get('weights')}`), input "
        f"{data.get('image_size')}x{data.get('image_size')} RGB, outputs probabilities for "
        f"{len(class_names)} classes: {', '.join(class_names)}.",
        "",
        f"**Data.** Source `{data.get('source')}`, dataset `{data.get('dataset')}`, labels "
        f"`{data.get('labels')}`; test split of {metrics['n_test']} images, never used for training"
        + (" (but used to choose the checkpoint)." if data.get("test_as_validation") else
           " or checkpoint selection."),
        "",
        f"**Metrics.** Balanced accuracy {number(metrics['balanced_accuracy'])}, macro F1 "
        f"{number(metrics['macro_f1'])}, ROC AUC {number(metrics['roc_auc'])}.{screening}",
        "",
        "**Known limits.**",
        "",
        *[f"- {limit}" for limit in limits],
    ])


def render_report(params, metrics, class_names, data_counts, plot_files, training=None):
    """report.md text. `params` nested dict, `metrics` as in metrics.json, `data_counts` a DataFrame of
    images per class (rows; `counts_table`), `plot_files` paths relative to the run folder, `training`
    the training.json dict or None."""
    flat = flatten_params(params)
    lines = [f"# Evaluation report: {params.get('name', 'run')}", "",
             "Test-split results of the best checkpoint (model/best.keras), beside two baselines that never "
             "look at an image.", "", "## Metrics", "", metrics_table(metrics), ""]
    melanoma = metrics.get("melanoma")
    if melanoma:
        lines += [f"Melanoma screening (`{melanoma['class']}` vs the rest): sensitivity "
                  f"{number(melanoma['sensitivity'])}, specificity {number(melanoma['specificity'])}.", ""]
    lines += [f"Expected calibration error: {number(metrics['calibration']['ece'])}.", ""]
    for note in metrics.get("notes", []):
        lines += [f"**Note:** {note}", ""]
    lines += ["### Per class", "", per_class_table(metrics), "", "## Data", "",
              "Images per class: found in the raw data, used, skipped as unusable, and per split.", "",
              markdown_table(data_counts), ""]
    external = metrics.get("external")
    if external:
        lines += ["## External dataset", "",
                  f"`{external['dataset']}` from `{external['source']}`: {external['n_test']} images scored, "
                  f"{external['n_skipped']} unreadable, {external['n_unknown_label']} with a class the model "
                  "does not know.", "", metrics_table({key: value for key, value in external.items()
                                                        if key not in ("tta", "baselines")}), ""]
    if training:
        lines += ["## Training", "", "```json", json.dumps(training, indent=2), "```", ""]
    lines += ["## Plots", ""] + [f"- [{Path(path).stem}]({Path(path).as_posix()})" for path in plot_files]
    lines += ["", "## Parameters", "", "| parameter | value |", "|---|---|"]
    lines += [f"| {name} | `{json.dumps(value) if not isinstance(value, str) else value}` |"
              for name, value in flat.items()]
    lines += ["", model_card(params, class_names, metrics), ""]
    return "\n".join(lines)


def counts_table(counts):
    """data/counts.json ({"per_class": {class: {found, used, skipped, train, validation, test}}, "total": {...}})
    as a DataFrame: one row per class plus a "total" row."""
    table = pd.DataFrame(counts["per_class"]).T
    if counts.get("total"):
        table.loc["total"] = pd.Series(counts["total"])
    table.index.name = "class"
    return table.fillna(0).astype(int)
