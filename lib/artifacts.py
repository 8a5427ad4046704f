"""The files of a run folder: where each one lives, its one writer and its one reader, and the record of
which notebook made them (progress.json), so a run folder never silently mixes products of two models.

    outputs/<run>/params.yaml provenance.json progress.json         the runner (lib.pipeline)
    data/source.json                                                01_download
    data/manifest.csv classes.json counts.json skipped.csv ...      02_preprocess
    model/best.keras history.csv, logs/, features/, training.json   03_train
    metrics.json predictions.csv report.md plots/                   04_evaluate
    tfjs/ export.json                                               05_convert_tfjs

Every notebook, however it is run (the runner, `lib notebook`, papermill alone, Jupyter), calls
`start_step` first and `finish_step` last. Starting a step marks every later step's products stale:
`compare` flags such a run and `serve` refuses its stale TF.js model until the later steps run again.
"""

import datetime
import json
import os
import tempfile
from pathlib import Path

import pandas as pd

from lib.errors import RunError

STEPS = ("01_download", "02_preprocess", "03_train", "04_evaluate", "05_convert_tfjs")

SOURCE = "data/source.json"
MANIFEST = "data/manifest.csv"
CLASSES = "data/classes.json"
COUNTS = "data/counts.json"
PROCESSED = "data/processed"
SKIPPED = "data/skipped.csv"  # for people: every image that could not be used, with its reason
DUPLICATES = "data/duplicates.csv"  # for people: copies and near copies across splits
MODEL = "model/best.keras"
HISTORY = "model/history.csv"
TRAINING = "training.json"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
EXPORT = "export.json"
TFJS = "tfjs"
PROGRESS = "progress.json"
MANIFEST_COLUMNS = ("image_id", "label", "lesion_id", "split", "path", "source_path", "original_width",
                    "original_height")


def write_json(path, content):
    """Write `content` as indented JSON through a temporary file renamed into place, so a reader never sees
    half a file and a killed write leaves the previous version. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(json.dumps(content, indent=2) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def read_json(path, missing=None):
    """The JSON file at `path`, or `missing` when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else missing


def _require(run_dir, relative, made_by):
    path = Path(run_dir) / relative
    if not path.exists():
        raise RunError(f"{path} not found: run notebook {made_by} for this run first "
                       f"(python -m lib notebook {run_dir} {made_by})")
    return path


# ---- 01_download ----------------------------------------------------------------------------------

def write_source(run_dir, source):
    """data/source.json: where the raw dataset lies ({source, dataset, layout, raw_dir, dataset_root, n_files})."""
    return write_json(Path(run_dir) / SOURCE, source)


def read_source(run_dir):
    return json.loads(_require(run_dir, SOURCE, "01_download").read_text(encoding="utf-8"))


# ---- 02_preprocess --------------------------------------------------------------------------------

def write_manifest(run_dir, manifest, extra_columns=()):
    """data/manifest.csv: one row per usable image, MANIFEST_COLUMNS then those of `extra_columns` it has
    (e.g. a dataset's age, sex and body site)."""
    path = Path(run_dir) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = [column for column in extra_columns if column in manifest.columns]
    manifest[[*MANIFEST_COLUMNS, *extra]].to_csv(path, index=False)
    return path


def write_table(run_dir, relative, table):
    """A table written for people to read (SKIPPED, DUPLICATES): CSV, no index."""
    path = Path(run_dir) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


def write_counts(run_dir, counts):
    """data/counts.json: images per class found, used, skipped and per split (`splits.counts_json`)."""
    return write_json(Path(run_dir) / COUNTS, counts)


def read_counts(run_dir):
    return json.loads(_require(run_dir, COUNTS, "02_preprocess").read_text(encoding="utf-8"))


def read_manifest(run_dir, split=None, image_root=None):
    """data/manifest.csv as a DataFrame (all splits, or one of train | validation | test) with `abs_path`:
    each processed image's absolute path under `image_root` (the run folder by default; a local copy of
    its data/processed/ on Colab)."""
    path = _require(run_dir, MANIFEST, "02_preprocess")
    manifest = pd.read_csv(path, dtype={"image_id": str, "lesion_id": str, "label": str})
    if split is not None:
        if split not in set(manifest["split"]):
            raise RunError(f"no {split} images in {path}; splits present: {', '.join(sorted(set(manifest['split'])))}"
                           f" (check data.validation_fraction and data.test_fraction)")
        manifest = manifest[manifest["split"] == split].reset_index(drop=True)
    root = Path(image_root or run_dir)
    manifest["abs_path"] = [str(root / relative) for relative in manifest["path"]]
    return manifest


def write_classes(run_dir, classes):
    """data/classes.json: {"labels", "classes" (the order of the model's outputs), "long_names"}."""
    return write_json(Path(run_dir) / CLASSES, classes)


def read_classes(run_dir):
    """data/classes.json as written by `write_classes`."""
    return json.loads(_require(run_dir, CLASSES, "02_preprocess").read_text(encoding="utf-8"))


def class_names(run_dir):
    """The class names in the order of the model's outputs."""
    return list(read_classes(run_dir)["classes"])


# ---- 03_train --------------------------------------------------------------------------------------

def load_model(run_dir):
    """model/best.keras (raw RGB 0-255 in, probabilities out) for inference, computing in float32 (as TF.js does)
    even when it was trained under mixed precision."""
    import keras

    from lib import models

    return models.as_float32(keras.models.load_model(_require(run_dir, MODEL, "03_train"), compile=False))


def read_history(run_dir):
    """model/history.csv as a DataFrame (one row per finished epoch, the last write of an epoch wins), or None
    before the first epoch has finished."""
    path = Path(run_dir) / HISTORY
    if not path.is_file() or path.stat().st_size == 0:
        return None
    return pd.read_csv(path).drop_duplicates("epoch", keep="last").reset_index(drop=True)


# ---- progress: which step made what, and what is stale ----------------------------------------------

def read_progress(run_dir):
    """progress.json: {step: {"started_at", "finished_at", "seconds", "stale"}} for the steps that ran."""
    return read_json(Path(run_dir) / PROGRESS, missing={})


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _check_step(step):
    if step not in STEPS:
        raise RunError(f"unknown step {step!r}; choose one of: {', '.join(STEPS)}")


def start_step(run_dir, step):
    """Record that `step` starts in `run_dir`, and mark every later step that ran before as stale: its
    products were made from what this step is about to replace."""
    _check_step(step)
    progress = read_progress(run_dir)
    progress[step] = {"started_at": _now(), "finished_at": None, "seconds": None, "stale": None}
    for later in STEPS[STEPS.index(step) + 1:]:
        if later in progress and not progress[later].get("stale"):
            progress[later]["stale"] = f"{step} ran again at {progress[step]['started_at']}"
    write_json(Path(run_dir) / PROGRESS, progress)


def finish_step(run_dir, step):
    """Record that `step` finished; returns the seconds since `start_step`."""
    _check_step(step)
    progress = read_progress(run_dir)
    entry = progress.get(step) or {"started_at": None}
    finished = datetime.datetime.now(datetime.timezone.utc)
    started = entry.get("started_at")
    seconds = (finished - datetime.datetime.fromisoformat(started)).total_seconds() if started else None
    progress[step] = {**entry, "finished_at": finished.isoformat(timespec="seconds"),
                      "seconds": None if seconds is None else round(seconds, 1), "stale": None}
    write_json(Path(run_dir) / PROGRESS, progress)
    return seconds


def record_copied_steps(run_dir, source_run_dir, steps):
    """Record in `run_dir` that `steps` finished as they did in `source_run_dir`, whose products of them were
    copied here (a seed sweep shares notebooks 01-02 between its runs); each entry names where it came from."""
    source = read_progress(source_run_dir)
    missing = [step for step in steps if step not in finished_steps(source_run_dir)]
    if missing:
        raise RunError(f"cannot copy {', '.join(missing)} from {source_run_dir}: not finished there")
    progress = read_progress(run_dir)
    for step in steps:
        _check_step(step)
        progress[step] = {**source[step], "copied_from": Path(source_run_dir).name}
    write_json(Path(run_dir) / PROGRESS, progress)


def finished_steps(run_dir):
    """The steps whose products are complete and current (finished, and not stale)."""
    return [step for step, entry in read_progress(run_dir).items()
            if entry.get("finished_at") and not entry.get("stale")]


def stale_reason(run_dir, step):
    """Why `step`'s products are out of date (an earlier step ran again after it), or None."""
    return (read_progress(run_dir).get(step) or {}).get("stale")
