"""lib.export: Keras -> SavedModel -> TF.js graph model, metadata, sizes, and parity in headless Chromium."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from keras import layers  # noqa: E402

from lib import artifacts, browser, evaluation, export, inputs, models, paths  # noqa: E402
from lib.errors import ExportError  # noqa: E402

from tests import runfolders  # noqa: E402

IMAGE_SIZE = 32
CLASSES = runfolders.classes_info()


def small_mobilenet():
    """MobileNet v1 (alpha 0.25, random weights) with preprocess_input inside, as lib.models builds it."""
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    x = keras.applications.mobilenet.preprocess_input(inputs)
    x = keras.applications.MobileNet(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), alpha=0.25, weights=None,
                                     include_top=False, pooling="avg")(x)
    outputs = layers.Dense(3, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def calibrated(model):
    """Batch-norm statistics set from one batch of synthetic lesions (random-init MobileNet otherwise gives the same
    output for every input, and a parity test on it proves nothing)."""
    images, _ = runfolders.lesion_images(30, seed=2)
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = 0.0
    model(images.astype("float32"), training=True)
    return model


def split_images_of(run_dir):
    return inputs.load_processed(artifacts.read_manifest(run_dir, split="test")["abs_path"]).astype("float32")


@pytest.fixture(scope="session")
def cnn_model(trained_run):
    return trained_run[1]


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory, trained_run):
    """The shared trained run, with a metrics.json, exported with every quantization compared (browser parity
    measured when possible)."""
    run_dir = shutil.copytree(trained_run[0], tmp_path_factory.mktemp("exported") / "run")
    (run_dir / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.9, "balanced_accuracy": 0.88}}))
    mode = "auto" if browser.missing_tools() and os.environ.get("CI", "").lower() != "true" else "on"
    report = export.export_run(run_dir, quantize="none", parity_images=12, browser_parity_mode=mode,
                               run_name="fake-run", model=trained_run[1], compare_quantizations=tuple(export.QUANTIZATIONS))
    return run_dir, report


def test_fixture_model_outputs_depend_on_the_input(trained_run):
    probabilities = trained_run[1].predict(split_images_of(trained_run[0]), verbose=0)
    assert len(set(probabilities.argmax(axis=1))) >= 2
    assert probabilities.std(axis=0).max() > 0.05


@pytest.mark.slow
def test_export_installs_a_loadable_graph_model_with_metadata(exported_run):
    run_dir, _ = exported_run
    spec = export.verify_tfjs_model(run_dir / "tfjs", image_size=IMAGE_SIZE)
    assert spec["format"] == "graph-model"
    metadata = json.loads((run_dir / "tfjs" / "metadata.json").read_text())
    assert metadata["classes"] == CLASSES["classes"]
    assert metadata["long_names"]["mel"] == "melanoma"
    assert metadata["input"]["size"] == IMAGE_SIZE and metadata["input"]["range"] == [0, 255]
    assert metadata["run_name"] == "fake-run" and metadata["date"]
    assert metadata["test_metrics"]["test"]["accuracy"] == 0.9
    assert "not a diagnosis" in metadata["disclaimer"]
    assert not [path.name for path in run_dir.iterdir() if path.name.startswith(".")]  # no temp folders left


@pytest.mark.slow
def test_export_reports_size_for_each_quantization(exported_run):
    run_dir, report = exported_run
    written = json.loads((run_dir / "export.json").read_text())
    sizes = {option: written["options"][option]["size_bytes"] for option in export.QUANTIZATIONS}
    assert sizes["uint8"] < sizes["float16"] < sizes["none"]
    assert export.directory_size(run_dir / "tfjs") - (run_dir / "tfjs" / "metadata.json").stat().st_size \
        == sizes["none"]


@pytest.mark.slow
def test_saved_model_export_ignores_augmentation_and_matches_keras(exported_run):
    _, report = exported_run
    assert report["saved_model_parity"]["max_abs_diff"] < 1e-5
    assert report["saved_model_parity"]["top1_agreement"] == 1.0


@pytest.mark.slow
def test_float32_model_meets_the_parity_floor_in_chromium(exported_run, chromium):
    parity = exported_run[1]["options"]["none"]["parity"]
    assert parity["measured"] and parity["backend"] == "wasm"
    assert parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0


@pytest.mark.slow
def test_uint8_model_meets_the_top1_floor_in_chromium(exported_run, chromium):
    parity = exported_run[1]["options"]["uint8"]["parity"]
    assert parity["measured"] and parity["top1_agreement"] >= 0.98


@pytest.mark.slow
def test_mobilenet_float32_parity_in_chromium(tmp_path, chromium):
    model = calibrated(small_mobilenet())
    images, _ = runfolders.lesion_images(8, seed=3)
    reference = model.predict(images.astype("float32"), verbose=0)
    assert reference.std(axis=0).max() > 1e-3  # outputs depend on the input, so parity means something
    saved_model = export.export_saved_model(model, tmp_path / "saved", IMAGE_SIZE)
    converted = export.convert_saved_model(saved_model, tmp_path / "tfjs", "none")
    parity = export.browser_parity(converted, images, reference, "none", mode="on")
    assert parity["passes"], parity


@pytest.mark.slow
def test_colour_constancy_runs_in_chromium_as_in_keras(tmp_path, chromium):
    model = models.build_model("small_cnn", num_classes=3, image_size=IMAGE_SIZE, colour_constancy="shades_of_gray")
    images, _ = runfolders.lesion_images(8, seed=3)
    images = (images * np.asarray([1.0, 0.85, 0.7])).astype("uint8")  # a colour cast for the layer to remove
    reference = model.predict(images.astype("float32"), verbose=0)
    assert reference.std(axis=0).max() > 1e-3
    saved_model = export.export_saved_model(model, tmp_path / "saved", IMAGE_SIZE)
    converted = export.convert_saved_model(saved_model, tmp_path / "tfjs", "none")
    parity = export.browser_parity(converted, images, reference, "none", mode="on")
    assert parity["passes"], parity


@pytest.mark.slow
def test_uint8_spares_a_kernel_whose_small_output_channels_it_would_erase(tmp_path):
    """Per-tensor uint8 gives a kernel one scale; an output channel 1000x smaller than the others (as batch norm
    folding makes them) would round to zero, so that kernel goes float16 and the well-spread one uint8."""
    inputs = keras.Input((2, 2, 3))
    outputs = layers.Dense(3, name="skewed")(layers.Dense(8, name="spread")(layers.Flatten()(inputs)))
    model = keras.Model(inputs, outputs)
    kernel, bias = model.get_layer("skewed").get_weights()
    model.get_layer("skewed").set_weights([kernel * np.array([1e-3, 1.0, 1.0], "float32"), bias])
    saved_model = export.export_saved_model(model, tmp_path / "saved", image_size=2)
    float32 = export.convert_saved_model(saved_model, tmp_path / "tfjs", "none")
    safe = export.uint8_safe_weights(float32)
    names = [entry["name"] for group in json.loads((float32 / "model.json").read_text())["weightsManifest"]
             for entry in group["weights"]]
    assert [name for name in names if "skewed" in name], names
    assert any("spread" in name for name in safe) and not any("skewed" in name for name in safe)
    assert export.quantization_flags("uint8", saved_model, tmp_path)[-1] == "--quantize_float16"


def test_browser_parity_auto_records_not_measured_when_chromium_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("CHROMIUM_PATH", str(tmp_path / "no-chromium"))
    result = export.browser_parity(tmp_path, np.zeros((1, 4, 4, 3)), np.ones((1, 3)) / 3, "none", mode="auto")
    assert result["measured"] is False and "chromium" in result["reason"]
    with pytest.raises(ExportError, match="chromium"):
        export.browser_parity(tmp_path, np.zeros((1, 4, 4, 3)), np.ones((1, 3)) / 3, "none", mode="on")


def test_unknown_quantization_names_the_choices():
    with pytest.raises(ValueError, match="none, float16, uint8"):
        export.check_quantize("int4")


@pytest.mark.slow
def test_verify_rejects_a_model_with_a_missing_weight_shard(exported_run, tmp_path):
    run_dir, _ = exported_run
    copy = tmp_path / "broken"
    copy.mkdir()
    (copy / "model.json").write_text((run_dir / "tfjs" / "model.json").read_text())
    with pytest.raises(ExportError):
        export.verify_tfjs_model(copy)


def installed_copy(exported_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(exported_run[0], run_dir)
    return run_dir, (run_dir / "tfjs" / "model.json").read_bytes()


@pytest.mark.slow
def test_a_conversion_killed_midway_leaves_the_installed_model_and_the_next_export_cleans_up(exported_run, tmp_path):
    run_dir = shutil.copytree(exported_run[0], tmp_path / "run")
    installed = {path.name: path.read_bytes() for path in (run_dir / "tfjs").iterdir()}
    job = (f"from lib import export; export.export_run({str(run_dir)!r}, quantize='float16', parity_images=2, "
           "browser_parity_mode='off', compare_quantizations=('none', 'float16'))")
    process = subprocess.Popen([sys.executable, "-c", job], cwd=paths.PROJECT_ROOT, start_new_session=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not list(run_dir.glob(".export-*/tfjs-*")):  # the converter has started writing a TF.js model
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the conversion never started"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the exporting process and its converter subprocess
    process.wait()
    assert {path.name: path.read_bytes() for path in (run_dir / "tfjs").iterdir()} == installed
    assert list(run_dir.glob(".export-*")), "the killed export left its work folder, outside tfjs/"
    export.export_run(run_dir, quantize="none", parity_images=2, browser_parity_mode="off",
                      compare_quantizations=("none",))
    assert not list(run_dir.glob(".export-*")) and export.verify_tfjs_model(run_dir / "tfjs", IMAGE_SIZE)


@pytest.mark.slow
def test_failed_conversion_leaves_the_installed_model_untouched(exported_run, cnn_model, tmp_path, monkeypatch):
    run_dir, before = installed_copy(exported_run, tmp_path)

    def killed(saved_model_dir, output_dir, quantize="none", timeout_seconds=600, float32_dir=None):
        (Path(output_dir) / "group1-shard1of1.bin").parent.mkdir(parents=True)
        (Path(output_dir) / "group1-shard1of1.bin").write_bytes(b"half")
        raise ExportError("converter killed")

    monkeypatch.setattr(export, "convert_saved_model", killed)
    with pytest.raises(ExportError, match="killed"):
        export.export_run(run_dir, parity_images=2, browser_parity_mode="off", model=cnn_model)
    assert (run_dir / "tfjs" / "model.json").read_bytes() == before
    assert not list(run_dir.glob(".*"))


@pytest.mark.slow
def test_model_missing_the_parity_floor_is_not_installed(exported_run, cnn_model, tmp_path, monkeypatch):
    run_dir, before = installed_copy(exported_run, tmp_path)
    failing = {"measured": True, "max_abs_diff": 0.3, "top1_agreement": 0.5, "passes": False,
               "floor": export.FLOORS["none"]}
    monkeypatch.setattr(export, "browser_parity", lambda *args, **kwargs: failing)
    monkeypatch.setattr(export, "convert_saved_model",  # the converter's real run is covered above; be quick
                        lambda saved_model_dir, output_dir, *args, **kwargs: Path(
                            shutil.copytree(exported_run[0] / "tfjs", output_dir)))
    with pytest.raises(ExportError, match="disagrees with Keras"):
        export.export_run(run_dir, parity_images=2, model=cnn_model, compare_quantizations=("none",))
    assert (run_dir / "tfjs" / "model.json").read_bytes() == before
    assert json.loads((run_dir / "export.json").read_text())["options"]["none"]["parity"]["passes"] is False


def write_statistics_run(root, train_colors, test_color):
    """A run folder whose manifest has a 16x16 PNG per colour: `train_colors` as split train (a checkerboard of the
    colour and the colour + 20, so std 10), `test_color` as split test."""
    (root / "data" / "processed").mkdir(parents=True)
    rows = []
    for index, (color, split) in enumerate([*[(c, "train") for c in train_colors], (test_color, "test")]):
        board = (np.indices((16, 16)).sum(axis=0) % 2)[..., None] * 20 + np.array(color)
        path = f"data/processed/img{index:03d}.png"
        Image.fromarray(board.astype("uint8")).save(root / path)
        rows.append({"image_id": f"img{index:03d}", "split": split, "path": path})
    pd.DataFrame(rows).to_csv(root / "data" / "manifest.csv", index=False)
    return root


def test_input_statistics_come_from_a_deterministic_sample_of_training_images_only(tmp_path):
    greys = [(value, value, value) for value in range(100, 140)]
    run_dir = write_statistics_run(tmp_path, greys, test_color=(0, 0, 200))
    check = export.input_statistics(run_dir)
    assert check["images"] == 40 and check["fitted_on"] == "train"
    low, high = check["ranges"]["mean_blue"]
    assert low < 110 and 139 < high < 160  # every grey (mean 110-149) inside; the test image (blue 210) ignored
    assert check["ranges"]["std"][0] <= 10 <= check["ranges"]["std"][1]
    assert check["uniform_std_below"] == export.UNIFORM_STD_BELOW
    assert set(check["fields"]) >= set(check["ranges"]) | {"uniform_std_below"}
    capped = export.input_statistics(run_dir, max_images=10)
    assert capped["images"] == 10 and capped == export.input_statistics(run_dir, max_images=10)


def test_metadata_carries_the_class_biases_in_class_order_only_where_notebook_04_applied_them():
    bias = dict(zip(CLASSES["classes"], (0.5, -0.2, -0.3)))
    block = {"mode": "auto", "applied": True, "bias": bias}
    metrics = {"temperature": {"value": 0.8, "class_bias": block}}

    assert export.build_metadata(CLASSES, IMAGE_SIZE, "run", "none", metrics)["class_bias"] == [0.5, -0.2, -0.3]
    refused = {"temperature": {"value": 0.8, "class_bias": {**block, "applied": False}}}
    assert export.build_metadata(CLASSES, IMAGE_SIZE, "run", "none", refused)["class_bias"] is None
    reordered = {"temperature": {"value": 0.8, "class_bias": {**block, "bias": dict(reversed(bias.items()))}}}
    with pytest.raises(ExportError, match="class_bias is for the classes"):
        export.build_metadata(CLASSES, IMAGE_SIZE, "run", "none", reordered)


def test_input_statistics_are_none_without_training_images(tmp_path):
    assert export.input_statistics(write_statistics_run(tmp_path, [], test_color=(1, 2, 3))) is None


def test_metadata_carries_calibration_keys_from_metrics_and_defaults_without_them():
    metrics = {"temperature": {"value": 1.7, "fitted_on": "validation"},
               "operating_point": {"class": "mel", "threshold": 0.31, "target_sensitivity": 0.85, "extra": 1},
               "ood": {"score": "max_probability", "threshold": 0.42, "fitted_on": "validation", "quantile": 0.05}}
    metadata = export.build_metadata(CLASSES, IMAGE_SIZE, "run", "none", metrics, input_check={"ranges": {}})
    assert metadata["temperature"] == 1.7 and metadata["input_check"] == {"ranges": {}}
    assert metadata["operating_point"] == {"class": "mel", "threshold": 0.31, "target_sensitivity": 0.85}
    assert metadata["ood"]["threshold"] == 0.42 and metadata["ood"]["quantile"] == 0.05
    assert metadata["class_bias"] is None  # evaluate.class_bias off
    plain = export.build_metadata(CLASSES, IMAGE_SIZE, "run", "none", {"test": {}})
    assert [plain[key] for key in ("temperature", "class_bias", "operating_point", "ood", "input_check")] == [
        1.0, None, None, None, None]
    with pytest.raises(ExportError, match="'akiec' is not one of"):
        export.build_metadata(CLASSES, IMAGE_SIZE, "run", "none", {"operating_point": {
            "class": "akiec", "threshold": 0.3, "target_sensitivity": 0.85}})
    with pytest.raises(ExportError, match="ood lacks quantile"):
        export.build_metadata(CLASSES, IMAGE_SIZE, "run", "none", {"ood": {
            "score": "max_probability", "threshold": 0.4, "fitted_on": "validation"}})


@pytest.mark.parametrize("views", [1, 4, 8, 16])
def test_the_exported_endpoint_averages_the_views_notebook_04_scored(cnn_model, trained_run, views):
    images = split_images_of(trained_run[0])[:5]

    averaged = export.average_over_views(cnn_model, images, views).numpy()

    reference = evaluation.predict_views(cnn_model, images, views).mean(axis=1)
    assert averaged == pytest.approx(reference, abs=1e-6)
    if views > 1:  # the views differ, so the average is no single view's answer (the trained CNN is nearly
        # invariant to the turns of its symmetric synthetic lesions: 8e-4 apart on one machine, far above float noise)
        assert np.abs(averaged - cnn_model.predict(images, verbose=0)).max() > 1e-5


def test_metadata_says_how_many_views_the_model_averages_and_refuses_metrics_fitted_to_one_view():
    def tta(chosen, **extra):
        return {"tta": {"mode": "auto", "chosen": chosen, "views": evaluation.TTA_VIEWS[chosen], **extra}}

    assert export.build_metadata(CLASSES, IMAGE_SIZE, "run", "none", None)["views"] == {"count": 1, "mode": "off"}
    assert export.views_key(tta("off", one_view=None)) == {"count": 1, "mode": "off"}
    assert export.views_key(tta("dihedral", one_view={"accuracy": 0.5})) == {"count": 8, "mode": "dihedral"}
    with pytest.raises(ExportError, match="older 04_evaluate.*rerun 04_evaluate"):
        export.views_key(tta("flips"))


@pytest.mark.slow
def test_a_model_averaging_16_views_runs_in_chromium_as_in_keras(tmp_path, chromium):
    model = calibrated(small_mobilenet())
    images, _ = runfolders.lesion_images(6, seed=4)
    reference = evaluation.predict_views(model, images, 16).mean(axis=1)
    assert np.abs(reference - model.predict(images.astype("float32"), verbose=0)).max() > 1e-3
    saved_model = export.export_saved_model(model, tmp_path / "saved", IMAGE_SIZE, views=16)
    assert export.saved_model_probabilities(saved_model, images, batch_size=4) == pytest.approx(reference, abs=1e-5)
    converted = export.convert_saved_model(saved_model, tmp_path / "tfjs", "none")
    parity = export.browser_parity(converted, images, reference, "none", mode="on", views=16)
    assert parity["passes"], parity


def tiny_saved_model(folder):
    """A SavedModel of a two-layer dense model on 2x2 RGB input: converts in seconds."""
    inputs = keras.Input((2, 2, 3))
    outputs = layers.Dense(3, activation="softmax")(layers.Dense(8)(layers.Flatten()(inputs)))
    return export.export_saved_model(keras.Model(inputs, outputs), folder, image_size=2)


def quantized_dtypes(spec):
    """The storage dtypes of a graph model's float weights (float32 when not quantized)."""
    return {entry.get("quantization", {}).get("dtype", "float32") for group in spec["weightsManifest"]
            for entry in group["weights"] if entry["dtype"] == "float32"}


@pytest.mark.slow
def test_conversion_works_in_a_project_and_a_run_folder_whose_paths_have_spaces_and_non_ascii(tmp_path):
    """tensorflowjs_converter's own command joins its argv with spaces and splits it again; lib.converter gets
    each path as one argument, from a project path and a run path that both hold spaces and non-ASCII."""
    project = tmp_path / "mon projet é"
    shutil.copytree(paths.PROJECT_ROOT / "lib", project / "lib", ignore=shutil.ignore_patterns("__pycache__"))
    run_dir = tmp_path / "run folder ü 名前"
    saved_model = tiny_saved_model(run_dir / "saved model")
    job = ("import sys; from lib import export; print(export.__file__); "
           "export.convert_saved_model(sys.argv[1], sys.argv[2], 'float16')")
    result = subprocess.run([sys.executable, "-c", job, str(saved_model), str(run_dir / "tfjs ö")], cwd=project,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(str(project / "lib")), "the copy with a space in its path ran"
    spec = export.verify_tfjs_model(run_dir / "tfjs ö", image_size=2)
    assert quantized_dtypes(spec) == {"float16"}


@pytest.mark.slow
def test_browser_probabilities_over_several_pages_keep_the_order_of_the_images(exported_run, cnn_model, chromium):
    run_dir, _ = exported_run
    _, images = export.select_parity_images(run_dir, 12, IMAGE_SIZE)
    reference = cnn_model.predict(images.astype("float32"), verbose=0)
    paged = export.browser_probabilities(run_dir / "tfjs", images, images_per_page=5)  # pages of 5, 5 and 2
    assert paged["probabilities"].shape == reference.shape
    assert np.abs(paged["probabilities"] - reference).max() <= 1e-4
