"""The evaluation's files in a run folder besides metrics.json (written by `artifacts.write_json`):
predictions.csv, report.md with its model card, and the TensorBoard summary that lists the run in the HParams
dashboard with its main parameters, best validation and test metrics, confusion matrix and report."""

import dataclasses
import json
import logging
import typing
from pathlib import Path

import numpy as np
import pandas as pd

from lib import params as params_lib

logger = logging.getLogger(__name__)

# The parameters a reader compares runs by in TensorBoard's HParams dashboard (not all of params.yaml).
HPARAMS = ("model.backbone", "model.alpha", "model.trainable_layers", "model.batch_norm_affine", "data.image_size",
           "train.epochs", "train.fine_tune_epochs", "train.low_resolution_epochs", "train.plain_epochs",
           "train.learning_rate", "train.fine_tune_learning_rate", "train.optimizer", "train.loss",
           "train.label_smoothing", "train.sampling", "train.class_weight", "seed")
# train.class_weight is null, "balanced" or a mapping {class: weight}: HParams gets its kind (the weights are
# in params.yaml and report.md), so that the dashboard can filter on a finite set.
CLASS_WEIGHT_KINDS = ("none", "balanced", "per-class")
# Integer parameters without an upper bound in params.py get this one in their HParams domain (and seeds a lower).
INT_LIMIT = 2**31 - 1
# training.json's best_validation_metrics shown beside the test metrics (tag "best_validation_" + key).
HPARAMS_VALIDATION_METRICS = ("loss", "accuracy", "balanced_accuracy", "auc")
# Test metrics of metrics.json shown as scalars (tag "test_" + name): name -> path of keys in metrics.json.
HPARAMS_TEST_METRICS = {"accuracy": ("accuracy",), "balanced_accuracy": ("balanced_accuracy",),
                        "macro_f1": ("macro_f1",), "roc_auc": ("roc_auc",), "top3_accuracy": ("top3_accuracy",),
                        "screening_sensitivity": ("operating_point", "test", "sensitivity", "value"),
                        "screening_specificity": ("operating_point", "test", "specificity", "value"),
                        "ece": ("calibration", "ece")}
# Ends the summary's event file name, so a rerun finds and replaces only its own summary.
HPARAMS_FILE_SUFFIX = ".hparams.v2"
# Rows of the metrics table in report.md: (metrics.json key, label).
TABLE_ROWS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy (mean recall)"),
              ("macro_f1", "macro F1"), ("roc_auc", "ROC AUC (macro one-vs-rest, or binary)"),
              ("top2_accuracy", "top-2 accuracy"), ("top3_accuracy", "top-3 accuracy"))


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


def write_predictions(table, out_path):
    """Write an `evaluation.predictions_table` as CSV; return the path."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_path, index=False, float_format="%.6f")
    logger.info("wrote %s", out_path)
    return out_path


# ---- TensorBoard --------------------------------------------------------------------------------------

def schema_field(dotted):
    """(type hint, metadata) of a parameter of `lib.params.Params`, e.g. "train.learning_rate"."""
    cls, hint, metadata = params_lib.Params, None, {}
    for part in dotted.split("."):
        if cls is None:
            raise KeyError(f"{dotted} is not a parameter")
        fields = {item.name: item for item in dataclasses.fields(cls)}
        if part not in fields:
            raise KeyError(f"{dotted} is not a parameter; {part!r} is not one of {', '.join(fields)}")
        hint, metadata = typing.get_type_hints(cls)[part], fields[part].metadata
        cls = hint if dataclasses.is_dataclass(hint) else None
    return hint, metadata


def hparam(dotted):
    """The typed HParam of a parameter, its domain read from lib.params: its choices (or a switch's two values) as a
    discrete set, a number's bounds as an integer or real interval (INT_LIMIT where params.py sets none)."""
    from tensorboard.plugins.hparams import api as hp

    if dotted == "train.class_weight":
        return hp.HParam(dotted, hp.Discrete(list(CLASS_WEIGHT_KINDS)))
    hint, metadata = schema_field(dotted)
    if metadata.get("choices"):
        return hp.HParam(dotted, hp.Discrete(list(metadata["choices"])))
    if hint is bool:
        return hp.HParam(dotted, hp.Discrete([False, True]))
    low, high = metadata.get("low"), metadata.get("high")
    if hint is int:
        return hp.HParam(dotted, hp.IntInterval(-INT_LIMIT if low is None else int(low),
                                                INT_LIMIT if high is None else int(high)))
    if hint is float:
        return hp.HParam(dotted, hp.RealInterval(float(low or 0.0), float(INT_LIMIT if high is None else high)))
    raise TypeError(f"{dotted} ({hint}) is neither a choice nor a number: give it a domain in report.hparam")


def hparam_value(dotted, value):
    """A parameter's value as its HParam domain takes it."""
    if dotted == "train.class_weight":
        return "none" if value is None else "balanced" if value == "balanced" else "per-class"
    return value


def _dig(content, keys):
    for key in keys:
        if not isinstance(content, dict):
            return None
        content = content.get(key)
    return content


def write_tensorboard(log_dir, run_name, params, metrics, training=None, figures=(), report_text=None):
    """Write the run's TensorBoard summary into `log_dir` (the run's logs/, beside training's logs/train and
    logs/validation): the HParams session (the HPARAMS with typed domains, the best epoch's validation metrics from
    `training` (training.json) and the test metrics, closed with status success), the `figures` (PNG paths, e.g.
    the confusion matrices) as images and `report_text` (report.md) as text. `params` is the nested params dict.
    An earlier summary written here is replaced; other event files are left alone. Returns the scalar tags written."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import summary as hparams_summary

    flat = flatten_params(params)
    declared = [hp.Metric(f"best_validation_{key}", display_name=f"best epoch's validation {key}")
                for key in HPARAMS_VALIDATION_METRICS]
    declared += [hp.Metric(f"test_{name}", display_name=f"test {name}") for name in HPARAMS_TEST_METRICS]
    scalars = {f"best_validation_{key}": ((training or {}).get("best_validation_metrics") or {}).get(key)
               for key in HPARAMS_VALIDATION_METRICS}
    scalars.update({f"test_{name}": _dig(metrics, keys) for name, keys in HPARAMS_TEST_METRICS.items()})
    log_dir = Path(log_dir)
    for previous in log_dir.glob(f"events.out.tfevents.*{HPARAMS_FILE_SUFFIX}"):
        logger.info("replacing the earlier evaluation summary %s", previous)
        previous.unlink()
    writer = tf.summary.create_file_writer(str(log_dir), filename_suffix=HPARAMS_FILE_SUFFIX)
    written = []
    with writer.as_default():
        hp.hparams_config(hparams=[hparam(name) for name in HPARAMS], metrics=declared)
        values = {name: hparam_value(name, flat.get(name)) for name in HPARAMS}
        hp.hparams({name: value for name, value in values.items() if value is not None}, trial_id=run_name)
        for tag, value in scalars.items():
            if value is not None:
                tf.summary.scalar(tag, value, step=0)
                written.append(tag)
        for figure in figures:
            png = tf.io.decode_png(tf.io.read_file(str(figure)), channels=3)
            tf.summary.image(Path(figure).stem, png[tf.newaxis], step=0)
        if report_text:
            tf.summary.text("report", report_text, step=0)
        end = hparams_summary.session_end_pb(api_pb2.STATUS_SUCCESS)
        tf.summary.experimental.write_raw_pb(end.SerializeToString(), step=0)
    writer.close()
    logger.info("wrote the TensorBoard summary of %s to %s", run_name, log_dir)
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


def interval(bounds, digits=2):
    """A 95% interval [low, high] as "low-high" (empty when there is none)."""
    return "" if not bounds else f"{bounds[0]:.{digits}f}-{bounds[1]:.{digits}f}"


def with_interval(value, bounds):
    """A metric and its interval: "0.812 (0.76-0.86)"."""
    return number(value) + (f" ({interval(bounds)})" if bounds else "")


def metrics_table(metrics, label="model (test)"):
    """Markdown table of the headline metrics: the model (column `label`) with its 95% interval, on validation,
    on one view when it averages several, and the baselines beside it, each where present."""
    intervals = (metrics.get("bootstrap") or {}).get("intervals")
    columns = [(label, metrics, None)]
    if intervals:
        columns.append(("95% interval", None, intervals))
    if metrics.get("validation"):
        columns.append(("model (validation)", metrics["validation"], None))
    one_view = (metrics.get("tta") or {}).get("one_view")
    if one_view:
        columns.append(("model, one view (test)", one_view, None))
    for name, values in (metrics.get("baselines") or {}).items():
        columns.append((f"{name} baseline", values, None))
    lines = ["| metric | " + " | ".join(name for name, _, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for key, label in TABLE_ROWS:
        if key in metrics:
            cells = [interval(bounds.get(key)) if bounds else number(values.get(key)) for _, values, bounds in columns]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def screening_lines(metrics):
    """report.md's sentences on the screening class: at the argmax, then at the operating point chosen on
    validation, each with its 95% interval."""
    melanoma, point = metrics.get("melanoma"), metrics.get("operating_point")
    if not melanoma:
        return []
    intervals = (metrics.get("bootstrap") or {}).get("intervals") or {}
    positives = metrics["per_class"][melanoma["class"]]["support"]
    lines = [f"Screening for `{melanoma['class']}` against every other class, on {positives} `{melanoma['class']}` "
             f"and {metrics['n_test'] - positives} other test images (95% intervals in brackets):", "",
             f"- at the most probable class (argmax): sensitivity "
             f"{with_interval(melanoma['sensitivity'], intervals.get('melanoma_sensitivity'))}, specificity "
             f"{with_interval(melanoma['specificity'], intervals.get('melanoma_specificity'))};"]
    if point:
        test = point["test"]
        lines.append(f"- at the operating point (calibrated probability of `{point['class']}` >= "
                     f"{point['threshold']:.4f}, chosen on validation for a sensitivity of at least "
                     f"{point['target_sensitivity']:.2f}; there sensitivity "
                     f"{number(point['validation']['sensitivity'])}, "
                     f"specificity {number(point['validation']['specificity'])}): on test sensitivity "
                     f"{with_interval(test['sensitivity']['value'], test['sensitivity']['ci'])}, specificity "
                     f"{with_interval(test['specificity']['value'], test['specificity']['ci'])}.")
    else:
        lines.append("- no operating point: the validation split needs images of this class and of others.")
    return lines + [""]


def calibration_lines(metrics):
    """report.md's calibration section: the temperature and the ECE before and after it, on validation and test."""
    temperature = metrics.get("temperature")
    lines = ["## Calibration", ""]
    if not temperature:
        return lines + [f"No temperature (no validation split). Test ECE: {number(metrics['calibration']['ece'])}.", ""]
    return lines + [
        f"Temperature scaling fitted on {temperature['n']} validation images: T = {temperature['value']:.3f} "
        "(calibrated probability = p^(1/T), renormalised; T > 1 softens over-confident outputs). Every probability "
        "in this report, in predictions.csv and on the web page is calibrated. T minimises the negative "
        "log-likelihood on validation, not the binned expected calibration error (ECE), which can rise "
        "where the likelihood improves.", "",
        "| | ECE before | ECE after | negative log-likelihood before | after |", "|---|---|---|---|---|",
        *[f"| {label} | {number(temperature[f'{split}_ece_before'])} | {number(temperature[f'{split}_ece_after'])} | "
          f"{number(temperature.get(f'{split}_nll_before'))} | {number(temperature.get(f'{split}_nll_after'))} |"
          for split, label in (("validation", "validation (fitted here)"), ("test", "test"))], "",
        *class_bias_lines(temperature.get("class_bias"))]


def class_bias_lines(block):
    """report.md's lines on the class biases (`evaluation.choose_class_bias`): whether they are applied, why, and
    their values; none when evaluate.class_bias is off."""
    if not block:
        return []
    cross_validation = block["cross_validation"]
    held_out = ("" if cross_validation is None else
                f" Validation balanced accuracy of held-out halves (biases fitted on the other half, "
                f"{cross_validation['repeats']} random halvings): {cross_validation['without']:.3f} without, "
                f"{cross_validation['with']:.3f} with.")
    verdict = ("applied: every prediction, probability and threshold here, and the web page's, include them"
               if block["applied"] else "not applied (they did not raise it)")
    values = ", ".join(f"{name} {value:+.2f}" for name, value in block["bias"].items())
    return [f"Class biases (`evaluate.class_bias: {block['mode']}`), fitted on validation after T so that each class "
            f"weighs the same (times train.class_weight's factors), {verdict}.{held_out} Log-probability biases: "
            f"{values}.", ""]


def tta_lines(metrics):
    """report.md's test-time augmentation section: the mode, the validation scores and the choice, and how the
    balanced accuracy of one view varies with the orientation of the images."""
    tta = metrics.get("tta")
    if not tta:
        return []
    scores = ", ".join(f"{variant} {value:.3f}" for variant, value in tta["validation_balanced_accuracy"].items())
    chosen = (f"the model above, and the web page, average the {tta['views']} views of `{tta['chosen']}`, and one "
              "view is reported beside it" if tta["chosen"] != "off" else "the model above, and the web page, "
              "see each image once, as it is")
    held_out = tta.get("held_out_balanced_accuracy")
    if held_out:
        scores += ("; with the temperature and the class biases as the page applies them, on held-out validation "
                   "images (one view: the mean over its orientations; `auto` chooses on these): "
                   + ", ".join(f"{variant} {value:.3f}" for variant, value in held_out.items() if value is not None))
    lines = ["## Test-time augmentation", "",
             f"evaluate.tta: `{tta['mode']}`. Validation balanced accuracy: {scores or 'n/a (no validation split)'}; "
             f"{chosen}.", ""]
    orientations = {split: values for split, values in (tta.get("orientations") or {}).items() if values}
    if orientations:
        spread = "; ".join(f"{split} {min(values):.3f}-{max(values):.3f} (mean {np.mean(values):.3f}, as stored "
                           f"{values[0]:.3f})" for split, values in orientations.items())
        lines += [f"One view, in each of the {len(next(iter(orientations.values())))} orientations predicted, "
                  f"balanced accuracy: {spread}. A photo can come turned any way, so `auto` weighs one view by the "
                  "mean: the checkpoint was chosen on validation as stored, whose score is its optimistic best.", ""]
    return lines


def subgroup_table(subgroups):
    """Markdown table of the results per subgroup, small groups marked."""
    positive = subgroups.get("class")
    header = ["by", "group", "images", "balanced accuracy"]
    if positive:
        header += [f"{positive} images", f"{positive} sensitivity (argmax)", "at the operating point"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for group in subgroups["groups"]:
        cells = [group["by"], group["group"] + (" (small)" if group["small"] else ""), str(group["n"]),
                 number(group["balanced_accuracy"])]
        if positive:
            cells += [str(group["n_positive"]), number(group.get("sensitivity")),
                      number(group.get("operating_point_sensitivity"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_class_table(metrics):
    """Markdown table of precision, recall, F1, support and one-vs-rest AUC per class."""
    lines = ["| class | precision | recall (sensitivity) | F1 | ROC AUC | support |", "|---|---|---|---|---|---|"]
    for name, values in metrics["per_class"].items():
        auc = (metrics.get("roc_auc_per_class") or {}).get(name)
        lines.append(f"| {name} | {number(values['precision'])} | {number(values['recall'])} | "
                     f"{number(values['f1'])} | {number(auc)} | {values['support']} |")
    return "\n".join(lines)


def known_limits(params, class_names, metrics):
    """The model card's list of what the numbers do not show."""
    data = params.get("data", {})
    external = metrics.get("external")
    temperature = metrics.get("temperature")
    limits = [
        (f"Also measured on one external dataset (`{external['dataset']}`, above); other cameras, clinics, skin "
         "types and non-dermoscopic phone photos remain unmeasured." if external else
         "Trained and tested on one dataset; accuracy on other cameras, clinics, skin types or "
         "non-dermoscopic phone photos is unknown until measured on an external test set (evaluate.external)."),
        "Class imbalance: plain accuracy rewards predicting the majority class; read balanced accuracy, "
        "per-class recall and the baselines beside it.",
        "Small test split: read every number with its 95% interval; two runs whose intervals overlap may not differ.",
        ("Probabilities are temperature-scaled on validation (test ECE "
         f"{number(temperature['test_ece_before'])} before, {number(temperature['test_ece_after'])} after), which "
         "makes them better calibrated on data like the test split, not risks for a person."
         if temperature else "Probabilities are not calibrated (no validation split); see the reliability diagram."),
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
    return limits


def model_card(params, class_names, metrics):
    """The model card section of report.md: intended use, model, data, metrics with intervals, subgroups,
    known limits."""
    data, model = params.get("data", {}), params.get("model", {})
    intervals = (metrics.get("bootstrap") or {}).get("intervals") or {}
    point = metrics.get("operating_point")
    test = point["test"] if point else None
    screening = (f" At the operating point, `{point['class']}` sensitivity "
                 f"{with_interval(test['sensitivity']['value'], test['sensitivity']['ci'])} and specificity "
                 f"{with_interval(test['specificity']['value'], test['specificity']['ci'])}." if point else "")
    subgroups = metrics.get("subgroups")
    subgroup_lines = ([f"**Subgroups.** Test results per age band, sex, body site and how the diagnosis was "
                       f"confirmed, where the metadata has them. Groups marked small have fewer than "
                       f"{subgroups['min_images']} images"
                       + (f" or fewer than {subgroups['min_positives']} `{subgroups['class']}` images"
                          if subgroups.get("class") else "")
                       + ": their numbers can move by 0.2 or more by chance alone.", "", subgroup_table(subgroups),
                       ""] if subgroups else
                      ["**Subgroups.** The dataset records no age, sex or body site: results per subgroup are "
                       "unknown.", ""])
    return "\n".join([
        "## Model card", "",
        "**Intended use.** Research and education on skin-lesion image classification. This model is NOT a "
        "medical device and must not be used for diagnosis or to decide whether to see a doctor.", "",
        f"**Model.** Backbone `{model.get('backbone')}` (weights `{model.get('weights')}`), input "
        f"{data.get('image_size')}x{data.get('image_size')} RGB, outputs probabilities for "
        f"{len(class_names)} classes: {', '.join(class_names)}.", "",
        f"**Data.** Source `{data.get('source')}`, dataset `{data.get('dataset')}`, labels "
        f"`{data.get('labels')}`; test split of {metrics['n_test']} images, never used for training"
        + (" (but used to choose the checkpoint)." if data.get("test_as_validation") else
           " or checkpoint selection."), "",
        f"**Metrics** (test, 95% intervals). Balanced accuracy "
        f"{with_interval(metrics['balanced_accuracy'], intervals.get('balanced_accuracy'))}, macro F1 "
        f"{with_interval(metrics['macro_f1'], intervals.get('macro_f1'))}, ROC AUC "
        f"{with_interval(metrics['roc_auc'], intervals.get('roc_auc'))}.{screening}", "",
        *subgroup_lines,
        "**Known limits.**", "",
        *[f"- {limit}" for limit in known_limits(params, class_names, metrics)],
    ])


def test_set_line(metrics):
    """Which images the test numbers are about, and how the intervals were drawn."""
    test_set, bootstrap = metrics.get("test_set"), metrics.get("bootstrap")
    line = f"Test split: {metrics['n_test']} images"
    if test_set:
        line += (f", fingerprint `{test_set['sha256'][:12]}` (runs with the same fingerprint were tested on the same "
                 "images)")
    if bootstrap:
        line += (f". Intervals: 95% percentile bootstrap, {bootstrap['n_resamples']} resamples of the "
                 f"{bootstrap['n_units']} test {bootstrap['unit']}s (seed {bootstrap['seed']})")
    return line + "."


def render_report(params, metrics, class_names, data_counts, plot_files, training=None):
    """report.md text. `params` nested dict, `metrics` as in metrics.json, `data_counts` a DataFrame of
    images per class (rows; `counts_table`), `plot_files` paths relative to the run folder, `training`
    the training.json dict or None."""
    lines = [f"# Evaluation report: {params.get('name', 'run')}", "",
             "Results of the best checkpoint (model/best.keras) as the web page runs it (the views of each image "
             "that validation chose, averaged, probabilities calibrated on validation; see Test-time augmentation), "
             "beside two baselines that never look at an image.", "",
             test_set_line(metrics), "", "## Metrics", "", metrics_table(metrics), ""]
    lines += screening_lines(metrics)
    for note in metrics.get("notes", []):
        lines += [f"**Note:** {note}", ""]
    lines += ["### Per class", "", per_class_table(metrics), ""]
    lines += calibration_lines(metrics) + tta_lines(metrics)
    ood = metrics.get("ood")
    if ood:
        lines += ["## Unfamiliar inputs", "",
                  f"The web page warns when the top calibrated probability is below {ood['threshold']:.3f}, the "
                  f"{ood['quantile']:.0%} quantile over the {ood['n']} validation images: a photo unlike the "
                  "training data often gets no confident answer (not always: confident mistakes exist).", ""]
    lines += ["## Data", "", "Images per class: found in the raw data, used, skipped as unusable, and per split.", "",
              markdown_table(data_counts), ""]
    external = metrics.get("external")
    if external:
        lines += ["## External dataset", "",
                  f"`{external['dataset']}` from `{external['source']}`: {external['n_test']} images scored, "
                  f"{external['n_skipped']} unusable, {external['n_unknown_label']} with a class the model "
                  "does not know.", "", metrics_table(external, label="model (external)"), ""]
    if training:
        lines += ["## Training", "", "```json", json.dumps(training, indent=2), "```", ""]
    lines += ["## Plots", ""] + [f"- [{Path(path).stem}]({Path(path).as_posix()})" for path in plot_files]
    lines += ["", "## Parameters", "", "| parameter | value |", "|---|---|"]
    lines += [f"| {name} | `{json.dumps(value) if not isinstance(value, str) else value}` |"
              for name, value in flatten_params(params).items()]
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
