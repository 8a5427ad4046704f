"""Convert a trained Keras model to a TensorFlow.js graph model, with metadata, sizes and parity numbers.

Route (the one that loads in TF.js 4.22 from Keras 3, see shared/ECOSYSTEM.md): an inference-only
SavedModel whose endpoint calls `model(x, training=False)` (so no augmentation layer runs) on the views of each image
that notebook 04 chose on validation (metrics.json "tta") and averages them, so the page feeds one photo and gets
what the report scored; converted to a graph model by the `tensorflowjs` converter's Python API in a subprocess
(`python -m lib.converter`), which needs no TensorFlow Decision Forests and so runs with Colab's TensorFlow as well.
A conversion is written to a temporary folder and renamed into place only when complete, so a killed
run never leaves a half model that the page would load.
"""

import datetime
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from lib import artifacts, converter, evaluation, inputs, paths, registry
from lib.errors import ExportError

logger = logging.getLogger(__name__)

# converter flags per quantization option; they quantize the weights only (activations stay float32).
# uint8 is affine per tensor, the converter's only kind: one scale for a whole kernel. After batch norm is folded
# into a conv kernel, its output channels can differ in scale by 100x or more (ImageNet MobileNet v1), and the small
# ones round to a few levels (top-1 agreement 19% with Keras when every tensor is uint8). So "uint8" quantizes to
# uint8 only the tensors where every output channel keeps its shape (`uint8_safe_weights`), the rest to float16.
QUANTIZATIONS = {"none": [], "float16": ["--quantize_float16"], "uint8": None}
# largest relative RMS error uint8 may add to any output channel of a tensor quantized to uint8
UINT8_MAX_CHANNEL_ERROR = 0.02
# the floors: float32 must match Keras closely; quantized models must agree on the top class
FLOORS = {"none": {"max_abs_diff": 1e-4, "top1_agreement": 1.0},
          "float16": {"max_abs_diff": None, "top1_agreement": 0.98},
          "uint8": {"max_abs_diff": None, "top1_agreement": 0.98}}
# images one Chromium page classifies for parity: 128 at 224 px are 77 MB of float32 for the page to fetch; the
# page's time limit for each view the model averages (MobileNet 0.75 at 224 px on wasm: ~8 s a view of 128 images)
PAGE_IMAGES = 128
PAGE_SECONDS_PER_VIEW = 120
DISCLAIMER = ("Research demo, not a diagnosis. This model was trained on a small public dataset and has not been "
              "validated for clinical use. It can be wrong, including for dangerous lesions. If a skin lesion "
              "worries you, changes, bleeds or itches, see a doctor or dermatologist.")
EXPECTED_INPUT = {"layout": "NHWC", "dtype": "float32", "range": [0, 255], "color": "RGB",
                  "note": "raw RGB pixel values 0-255; preprocessing (scaling) happens inside the model"}
SIGNATURE = "serve"


def check_quantize(quantize):
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantize!r}; choose one of: {', '.join(QUANTIZATIONS)}")
    return quantize


def average_over_views(model, images, views=1):
    """`model(x, training=False)` averaged over the first `views` views of each image, in TensorFlow ops the TF.js
    converter keeps (ImageProjectiveTransformV3, Transpose, ReverseV2, ConcatV2, Mean): the graph counterpart of
    `evaluation.predict_views(...).mean(axis=1)`, each view made as `evaluation.view_steps` says. Images must be
    square."""
    if views not in evaluation.TTA_VIEWS.values():
        raise ValueError(f"views must be one of {sorted(evaluation.TTA_VIEWS.values())}; got {views}")
    if views == 1:
        return model(images, training=False)
    turns = {degrees: evaluation.turned(images, degrees)
             for degrees in sorted({evaluation.view_steps(index)[0] for index in range(views)})}
    pictures = [evaluation.oriented(turns[evaluation.view_steps(index)[0]], index) for index in range(views)]
    probabilities = model(tf.concat(pictures, axis=0), training=False)
    return tf.reduce_mean(tf.reshape(probabilities, [views, tf.shape(images)[0], -1]), axis=0)


def export_saved_model(model, saved_model_dir, image_size, views=1):
    """Write an inference-only SavedModel of `model` to `saved_model_dir` (must not exist).

    Endpoint "serve": float32 (None, image_size, image_size, 3) raw RGB 0-255 -> `average_over_views`."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE, fn=lambda images: average_over_views(model, images, views),
        input_signature=[tf.TensorSpec(shape=(None, image_size, image_size, 3), dtype=tf.float32, name="images")])
    archive.write_out(str(saved_model_dir), verbose=False)
    return Path(saved_model_dir)


def views_key(metrics):
    """metadata.json's "views": {"count", "mode"} of metrics.json's "tta" choice (1 view, "off", without one): how
    many orientations of a photo the exported model averages. A metrics.json written before the headline used the
    chosen views (no "one_view" beside a choice of several) is refused: its temperature and thresholds were fitted
    to one view."""
    tta = (metrics or {}).get("tta") or {"chosen": "off"}
    if tta["chosen"] not in evaluation.TTA_VIEWS:
        raise ExportError(f"metrics.json tta.chosen is {tta['chosen']!r}, not one of {', '.join(evaluation.TTA_VIEWS)}"
                          " (rerun 04_evaluate)")
    if tta["chosen"] != "off" and "one_view" not in tta:
        raise ExportError("metrics.json was written by an older 04_evaluate, which fitted the temperature and the "
                          f"thresholds to one view while choosing {tta['chosen']}: rerun 04_evaluate")
    return {"count": evaluation.TTA_VIEWS[tta["chosen"]], "mode": tta["chosen"]}


def uint8_safe_weights(tfjs_dir, max_channel_error=UINT8_MAX_CHANNEL_ERROR):
    """Names of the float weights of the float32 graph model in `tfjs_dir` that per-tensor uint8 quantization
    (tensorflowjs.quantization, exactly as the converter does it) keeps within `max_channel_error` relative RMS
    error in every output channel (the last axis; the input-channel axis of depthwise kernels (h, w, c, 1))."""
    tensorflowjs = converter.import_tensorflowjs()
    quantization, read_weights = tensorflowjs.quantization, tensorflowjs.read_weights
    spec = json.loads((Path(tfjs_dir) / "model.json").read_text())
    safe = []
    for entry in read_weights.read_weights(spec["weightsManifest"], str(tfjs_dir), flatten=True):
        data = np.asarray(entry["data"])
        if data.dtype != np.float32 or data.size < 2:
            continue
        quantized, metadata = quantization.quantize_weights(data, np.uint8)
        error = quantization.dequantize_weights(quantized, metadata, np.float32) - data
        axis = -2 if data.ndim == 4 and data.shape[-1] == 1 else -1
        channels = np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1)
        channel_errors = np.moveaxis(error, axis, 0).reshape(data.shape[axis], -1)
        rms, error_rms = np.sqrt((channels ** 2).mean(axis=1)), np.sqrt((channel_errors ** 2).mean(axis=1))
        relative = np.divide(error_rms, rms, out=np.where(error_rms > 0, np.inf, 0.0), where=rms > 0)
        if relative.max() <= max_channel_error:
            safe.append(entry["name"])
    return safe


def quantization_flags(quantize, saved_model_dir, work_dir, float32_dir=None):
    """The converter's quantization flags for `quantize`; for uint8, worked out from the float32 conversion
    `float32_dir` (made in `work_dir` when not given)."""
    if check_quantize(quantize) != "uint8":
        return QUANTIZATIONS[quantize]
    probe = float32_dir or convert_saved_model(saved_model_dir, Path(work_dir) / "float32-probe", "none")
    safe = uint8_safe_weights(probe)
    if float32_dir is None:
        shutil.rmtree(probe)
    logger.info("uint8: %d weight tensors quantized to uint8, the others to float16", len(safe))
    # flags of `python -m lib.converter` (tensorflowjs_converter's names and meaning)
    return ([f"--quantize_uint8={','.join(safe)}"] if safe else []) + ["--quantize_float16"]


def convert_saved_model(saved_model_dir, output_dir, quantize="none", timeout_seconds=600, float32_dir=None):
    """Run the tensorflowjs converter (this interpreter's package, in a subprocess: ~1 GB RAM, 5-8 s, freed when it
    ends) on `saved_model_dir`, writing model.json + group*.bin to `output_dir`. Returns `output_dir`.
    uint8 reuses the float32 conversion `float32_dir` when given (see `quantization_flags`)."""
    flags = quantization_flags(quantize, saved_model_dir, Path(output_dir).parent, float32_dir)
    # each path is one argv element ("--" ends the flags), so spaces and any character in them are safe
    command = [sys.executable, "-m", "lib.converter", *flags, f"--signature_name={SIGNATURE}",
               "--saved_model_tags=serve", "--", str(saved_model_dir), str(output_dir)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_seconds,
                                cwd=paths.PROJECT_ROOT)  # `-m lib.converter` is this project's
    except subprocess.TimeoutExpired as error:
        raise ExportError(f"the tensorflowjs converter did not finish within {timeout_seconds} s") from error
    if result.returncode != 0 or not (Path(output_dir) / "model.json").is_file():
        raise ExportError(f"the tensorflowjs converter failed on {saved_model_dir} (exit {result.returncode}):\n"
                          f"{result.stderr[-3000:]}")
    return Path(output_dir)


def build_metadata(classes, image_size, run_name, quantize, metrics=None, resize_mode="squash", date=None,
                   input_check=None):
    """The page's metadata.json content: classes (order = model outputs), input, run, metrics, disclaimer,
    the views the model averages ("views", see `views_key`), and the page's checks: "temperature", "class_bias",
    "operating_point", "ood" (from `metrics`, see `calibration_keys`)
    and "input_check" (`input_check`, made by `input_statistics`; None when the run has no training images).

    `classes` is data/classes.json's dict ({"labels", "classes", "long_names"}); `metrics` metrics.json or None;
    `resize_mode` the run's data.resize_mode (the page implements "squash" and warns about the others)."""
    return {
        "run_name": run_name,
        "date": date or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "labels": classes.get("labels"),
        "classes": list(classes["classes"]),
        "long_names": {name: classes.get("long_names", {}).get(name, name) for name in classes["classes"]},
        "input": {"size": int(image_size), "shape": [None, int(image_size), int(image_size), 3], **EXPECTED_INPUT,
                  "resize_mode": resize_mode},
        "quantization": quantize,
        "test_metrics": metrics,
        "disclaimer": DISCLAIMER,
        "views": views_key(metrics),
        **calibration_keys(metrics, classes["classes"]),
        "input_check": input_check,
    }


def calibration_keys(metrics, class_names):
    """metadata.json's "temperature" (T; the page shows p_i^(1/T) / sum_j p_j^(1/T); 1.0 when notebook 04 fitted
    none), "class_bias" (log biases b in class order, or None: the page shows p_i^(1/T) e^b_i / sum_j p_j^(1/T)
    e^b_j where notebook 04 applied them), "operating_point" ({"class", "threshold", "target_sensitivity"}: the page
    flags a photo whose calibrated probability of that class is >= threshold) and "ood" ({"score", "threshold",
    "fitted_on", "quantile"}: the page calls the model unsure when the calibrated top probability is below
    threshold), from metrics.json's keys of the same names; the last three None when absent."""
    metrics = metrics or {}
    temperature = float((metrics.get("temperature") or {}).get("value", 1.0))
    if not temperature > 0:
        raise ExportError(f"metrics.json temperature.value is {temperature}; it must be > 0 (rerun 04_evaluate)")
    operating_point = _metrics_section(metrics, "operating_point", ("class", "threshold", "target_sensitivity"))
    if operating_point and operating_point["class"] not in class_names:
        raise ExportError(f"metrics.json operating_point.class {operating_point['class']!r} is not one of the "
                          f"model's classes {class_names} (rerun 04_evaluate)")
    ood = _metrics_section(metrics, "ood", ("score", "threshold", "fitted_on", "quantile"))
    if ood and ood["score"] != "max_probability":
        raise ExportError(f"metrics.json ood.score is {ood['score']!r}; the page implements only 'max_probability'")
    class_bias = evaluation.applied_class_bias(metrics.get("temperature"))
    if class_bias is not None:
        fitted_for = list(metrics["temperature"]["class_bias"]["bias"])
        if fitted_for != list(class_names):
            raise ExportError(f"metrics.json temperature.class_bias is for the classes {fitted_for}, the model's are "
                              f"{class_names} (rerun 04_evaluate)")
        class_bias = class_bias.tolist()
    return {"temperature": temperature, "class_bias": class_bias, "operating_point": operating_point, "ood": ood}


def _metrics_section(metrics, name, keys):
    """metrics[name] reduced to `keys` (None when absent); ExportError naming the keys it lacks."""
    section = metrics.get(name)
    if section is None:
        return None
    missing = [key for key in keys if key not in section]
    if missing:
        raise ExportError(f"metrics.json {name} lacks {', '.join(missing)} (has {', '.join(section)}): rerun "
                          "04_evaluate")
    return {key: section[key] for key in keys}


# input_check: the page compares a photo's statistics with the training images'. At most this many training images
# are read (a few seconds); the ranges are their INPUT_CHECK_PERCENTILES widened by INPUT_CHECK_MARGIN of the
# percentile span on each side, so 1-2% of training-like photos fall outside one of the four (HAM10000, recipe_onemap:
# 1.4% of the training and validation images, 1.9% of the test images) and a photo far off (a screenshot, a night
# shot, a blue-tinted scan) does.
INPUT_CHECK_MAX_IMAGES = 500
INPUT_CHECK_PERCENTILES = (0.5, 99.5)
INPUT_CHECK_MARGIN = 0.1
# Pooled std (0-255) below which an image is refused as near-uniform: skin texture and sensor noise give more than
# this in any real photo; a black square or a blank frame gives 0-1. Lowered to half the smallest training
# image's std if needed, so that no training image would be refused.
UNIFORM_STD_BELOW = 4.0
INPUT_STATISTICS = {
    "mean_red": "mean of the red channel over all pixels, 0-255",
    "mean_green": "mean of the green channel over all pixels, 0-255",
    "mean_blue": "mean of the blue channel over all pixels, 0-255",
    "std": "pooled standard deviation: sqrt of the mean over R, G, B of each channel's variance over the pixels "
           "(0 for a single-colour image), 0-255",
}


def image_statistics(image):
    """The INPUT_STATISTICS of a uint8 RGB (H, W, 3) image, as the page computes them on its resized pixels."""
    pixels = np.asarray(image, dtype=np.float64).reshape(-1, 3)
    means = pixels.mean(axis=0)
    return {"mean_red": float(means[0]), "mean_green": float(means[1]), "mean_blue": float(means[2]),
            "std": float(np.sqrt(pixels.var(axis=0).mean()))}


def input_statistics(run_dir, max_images=INPUT_CHECK_MAX_IMAGES, seed=0):
    """metadata.json's "input_check": accepted ranges of each INPUT_STATISTICS over the run's training images
    (data/manifest.csv rows with split == "train", processed PNGs; at most `max_images`, a fixed-seed sample) and
    the near-uniform floor. None when the manifest has no training rows."""
    import pandas as pd

    manifest = artifacts.read_manifest(run_dir)
    train = manifest[manifest["split"] == "train"].sort_values("image_id")
    if train.empty:
        return None
    sample = train.sample(n=min(max_images, len(train)), random_state=seed)
    table = pd.DataFrame([image_statistics(image) for image in inputs.load_processed(sample["abs_path"])])
    ranges = {}
    for name in INPUT_STATISTICS:
        low, high = np.percentile(table[name], INPUT_CHECK_PERCENTILES)
        margin = INPUT_CHECK_MARGIN * (high - low)
        ranges[name] = [round(float(max(0.0, low - margin)), 2), round(float(min(255.0, high + margin)), 2)]
    return {
        "fitted_on": "train", "images": len(table), "percentiles": list(INPUT_CHECK_PERCENTILES),
        "margin": INPUT_CHECK_MARGIN,
        "ranges": ranges,
        "uniform_std_below": round(min(UNIFORM_STD_BELOW, 0.5 * float(table["std"].min())), 2),
        "fields": {**INPUT_STATISTICS,
                   "ranges": "accepted [low, high] of each statistic, computed on the model's size x size input "
                             "pixels: the training images' percentiles widened by margin x their span on each side; "
                             "outside, the page says the photo is unlike the training data",
                   "uniform_std_below": "an image whose std is below this is near-uniform: the page refuses it"},
    }


def directory_size(folder):
    """Total size in bytes of the files in `folder` (model.json + weight shards)."""
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())


def verify_tfjs_model(tfjs_dir, image_size=None):
    """Check that `tfjs_dir` holds a graph model TF.js can load: model.json parses, every weight shard is
    there and decodes to the declared shapes (tensorflowjs.read_weights). Returns model.json's dict."""
    read_weights = converter.import_tensorflowjs().read_weights
    model_json = Path(tfjs_dir) / "model.json"
    if not model_json.is_file():
        raise ExportError(f"no model.json in {tfjs_dir}: convert the model first (notebook 05_convert_tfjs)")
    spec = json.loads(model_json.read_text())
    if spec.get("format") != "graph-model" or not spec.get("modelTopology", {}).get("node"):
        raise ExportError(f"{model_json} is not a TF.js graph model (format {spec.get('format')!r})")
    try:
        weights = read_weights.read_weights(spec["weightsManifest"], str(tfjs_dir), flatten=True)
    except (OSError, ValueError) as error:
        raise ExportError(f"the weights of {model_json} do not load: {error}") from error
    declared = [entry for group in spec["weightsManifest"] for entry in group["weights"]]
    for entry, array in zip(declared, weights):
        if list(array["data"].shape) != list(entry["shape"]):
            raise ExportError(f"weight {entry['name']} in {tfjs_dir} has shape {array['data'].shape}, "
                              f"model.json says {entry['shape']}")
    inputs = spec.get("signature", {}).get("inputs", {})
    if image_size is not None and inputs:
        dims = [int(d.get("size", -1)) for d in next(iter(inputs.values()))["tensorShape"]["dim"]]
        if dims[1:] != [image_size, image_size, 3]:
            raise ExportError(f"{model_json} takes input {dims}, expected (-1, {image_size}, {image_size}, 3)")
    return spec


def install_model(converted_dir, metadata, run_dir):
    """Write metadata.json into `converted_dir`, then rename it to `run_dir`/tfjs, replacing any old model
    only once the new one is complete. Returns the final folder."""
    converted_dir, target = Path(converted_dir), Path(run_dir) / "tfjs"
    (converted_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=".tfjs-old-", dir=run_dir))
        target.rename(old / "tfjs")
    converted_dir.rename(target)
    if old is not None:
        shutil.rmtree(old)
    logger.info("TF.js model written to %s (%d bytes)", target, directory_size(target))
    return target


def select_parity_images(run_dir, count, image_size):
    """The first `count` test images of data/manifest.csv, taken in turn from each class (sorted by image_id)
    so every class shows up. Returns (image_ids, uint8 RGB array of shape (n, image_size, image_size, 3))."""
    manifest = artifacts.read_manifest(run_dir)
    test = manifest[manifest["split"] == "test"].sort_values("image_id")
    if test.empty:
        raise ExportError(f"no test images in {run_dir}/data/manifest.csv: parity needs split == 'test' rows")
    rank = test.groupby("label").cumcount()
    chosen = test.assign(rank=rank).sort_values(["rank", "label"]).head(count)
    return list(chosen["image_id"]), inputs.load_processed(chosen["abs_path"], image_size)


def compare_probabilities(reference, candidate):
    """Max absolute difference and top-1 agreement of two (n, classes) probability arrays."""
    reference, candidate = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ExportError(f"converted model gives shape {candidate.shape}, Keras {reference.shape}")
    return {"images": int(len(reference)), "max_abs_diff": float(np.max(np.abs(reference - candidate))),
            "top1_agreement": float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))}


def saved_model_probabilities(saved_model_dir, images, batch_size=32):
    """Probabilities from the exported SavedModel itself (Python side): shows the export kept the model. In batches:
    a model averaging 8 views runs 8x the images inside (512 at once held ~5 GB per MobileNet activation and
    crashed)."""
    endpoint = tf.saved_model.load(str(saved_model_dir)).signatures[SIGNATURE]
    return np.concatenate([next(iter(endpoint(images=tf.constant(images[start:start + batch_size],
                                                                 dtype=tf.float32)).values())).numpy()
                           for start in range(0, len(images), batch_size)])


def browser_probabilities(tfjs_dir, images, backend="wasm", timeout_seconds=120, images_per_page=PAGE_IMAGES):
    """Run the TF.js model in `tfjs_dir` on `images` (n, S, S, 3 raw RGB 0-255) in headless Chromium with the
    project's TF.js (web/node_modules), `images_per_page` at a time, each page within `timeout_seconds` (a model
    averaging 8 views needs about 8 times one view's). Returns {"probabilities" (in the order of
    `images`), "backend", "browser", "milliseconds" (summed over the pages)}."""
    pages = [page_probabilities(tfjs_dir, images[start:start + images_per_page], backend, timeout_seconds)
             for start in range(0, len(images), images_per_page)]
    return {**pages[0], "probabilities": np.concatenate([page["probabilities"] for page in pages]),
            "milliseconds": sum(page["milliseconds"] for page in pages)}


def page_probabilities(tfjs_dir, images, backend, timeout_seconds):
    """One headless Chromium page running the TF.js model on `images`: browser_probabilities' unit of work."""
    from lib import browser, serve

    with tempfile.TemporaryDirectory(prefix="parity-") as parity_dir:
        data = np.ascontiguousarray(images, dtype="<f4")
        (Path(parity_dir) / "images.bin").write_bytes(data.tobytes())
        (Path(parity_dir) / "images.json").write_text(json.dumps({"shape": list(data.shape)}))
        server = serve.make_server({"/": serve.WEB_DIR, "/model/": tfjs_dir, "/parity/": parity_dir})
        try:
            url = serve.start_in_thread(server)
            return browser.run_script("parity.mjs", {"url": url, "backend": backend,
                                                     "timeout_ms": timeout_seconds * 1000},
                                      timeout_seconds=timeout_seconds + 30)
        finally:
            server.shutdown()
            server.server_close()


def browser_parity(tfjs_dir, images, keras_probabilities, quantize, mode="auto", views=1):
    """Parity of the TF.js model in Chromium against Keras, with the floors for `quantize`.

    mode "on": missing chromium/node raise ExportError; "auto": recorded as not measured, with the reason;
    "off": not measured. `views`: how many orientations the model averages (the page's time limit scales with it).
    Returns {"measured", "max_abs_diff", "top1_agreement", "passes", ...}."""
    from lib import browser

    if mode not in registry.BROWSER_PARITY:
        raise ValueError(f"unknown browser_parity {mode!r}; choose one of: {', '.join(registry.BROWSER_PARITY)}")
    missing = browser.missing_tools() if mode != "off" else []
    if mode == "off" or (missing and mode == "auto"):
        reason = "export.browser_parity is off" if mode == "off" else (
            f"missing {', '.join(missing)} ({browser.INSTALL_HINT})")
        logger.warning("TF.js parity NOT measured in a browser: %s", reason)
        return {"measured": False, "reason": reason}
    result = browser_probabilities(tfjs_dir, images, timeout_seconds=PAGE_SECONDS_PER_VIEW * views)
    numbers = compare_probabilities(keras_probabilities, result["probabilities"])
    floor = FLOORS[quantize]
    passes = numbers["top1_agreement"] >= floor["top1_agreement"] and (
        floor["max_abs_diff"] is None or numbers["max_abs_diff"] <= floor["max_abs_diff"])
    return {"measured": True, **numbers, "floor": floor, "passes": bool(passes), "backend": result["backend"],
            "browser": result.get("browser"), "milliseconds": round(result["milliseconds"], 1)}


def load_run_model(run_dir):
    """`run_dir`/model/best.keras as the float32 model the converter should see (see artifacts.load_model)."""
    return artifacts.load_model(run_dir)


def export_run(run_dir, quantize="none", parity_images=16, browser_parity_mode="auto", run_name=None,
               resize_mode="squash", model=None, compare_quantizations=("none",)):
    """Notebook 05's job: convert the run's model to `quantize` and to every option in `compare_quantizations`
    (float32 by default, the reference of parity; all of QUANTIZATIONS for a size table), with the size and browser
    parity of each, install the `quantize` one with metadata.json as `run_dir`/tfjs, write export.json. The model
    averages the views metrics.json chose (`views_key`), and Keras' reference probabilities are of the same views.

    `model` defaults to run_dir/model/best.keras. Raises ExportError if the installed option misses its
    parity floor (the previous tfjs/ is then left untouched). Returns export.json's content."""
    run_dir = Path(run_dir)
    for stale in [*run_dir.glob(".export-*"), *run_dir.glob(".tfjs-old-*")]:  # left by a killed export
        logger.info("removing %s, left by an interrupted export", stale)
        shutil.rmtree(stale)
    wanted = {check_quantize(quantize), *map(check_quantize, compare_quantizations)}
    options = [option for option in QUANTIZATIONS if option in wanted]  # float32 first: uint8 is derived from it
    model = model if model is not None else load_run_model(run_dir)
    image_size = int(model.input_shape[1])
    classes = artifacts.read_classes(run_dir)
    metrics = artifacts.read_json(run_dir / artifacts.METRICS)
    views = views_key(metrics)["count"]
    image_ids, images = select_parity_images(run_dir, parity_images, image_size)
    keras_probabilities = evaluation.predict_views(model, images, views).mean(axis=1)
    work_dir = Path(tempfile.mkdtemp(prefix=".export-", dir=run_dir))
    try:
        saved_model_dir = export_saved_model(model, work_dir / "saved_model", image_size, views)
        report = {"run_name": run_name or run_dir.name, "quantize": quantize, "image_size": image_size, "views": views,
                  "parity_image_ids": image_ids,
                  "saved_model_parity": compare_probabilities(
                      keras_probabilities, saved_model_probabilities(saved_model_dir, images)),
                  "options": {}}
        float32_dir = work_dir / "tfjs-none" if "none" in options else None  # converted first when wanted
        for option in options:
            converted = convert_saved_model(saved_model_dir, work_dir / f"tfjs-{option}", option,
                                            float32_dir=float32_dir)
            verify_tfjs_model(converted, image_size)
            report["options"][option] = {"size_bytes": directory_size(converted),
                                         "parity": browser_parity(converted, images, keras_probabilities,
                                                                  option, browser_parity_mode, views)}
            logger.info("%s: %d bytes, parity %s", option, report["options"][option]["size_bytes"],
                        report["options"][option]["parity"])
        chosen = report["options"][quantize]["parity"]
        report["browser_parity_measured"] = chosen["measured"]
        if chosen["measured"] and not chosen["passes"]:
            artifacts.write_json(run_dir / artifacts.EXPORT, report)
            raise ExportError(f"the {quantize} TF.js model disagrees with Keras in the browser beyond the floor "
                              f"{chosen['floor']}: {chosen}; see {run_dir / 'export.json'}")
        metadata = build_metadata(classes, image_size, report["run_name"], quantize, metrics, resize_mode,
                                  input_check=input_statistics(run_dir))
        install_model(work_dir / f"tfjs-{quantize}", metadata, run_dir)
        artifacts.write_json(run_dir / artifacts.EXPORT, report)
        return report
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def parity_table(report):
    """export.json's options as a DataFrame: size, max abs diff, top-1 agreement, floor met, per quantization."""
    import pandas as pd

    rows = []
    for option, result in report["options"].items():
        parity = result["parity"]
        rows.append({"quantization": option, "size_kb": round(result["size_bytes"] / 1024, 1),
                     "max_abs_diff": parity.get("max_abs_diff"), "top1_agreement": parity.get("top1_agreement"),
                     "floor_met": parity.get("passes"), "browser": parity.get("backend") or parity.get("reason"),
                     "installed": option == report["quantize"]})
    return pd.DataFrame(rows).set_index("quantization")
