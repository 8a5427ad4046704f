"""Params: every recipe file validates; every bad key, type or value fails naming the key and where it came
from (the file or the -p option), in one short line, however hostile the file."""

import json
import logging
import os
import resource
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from lib import __main__ as cli
from lib import params, paths
from lib.errors import ParamsError

RECIPES = sorted(paths.PARAMS_DIR.glob("*.yaml"))


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_file_validates(recipe):
    loaded = params.load(recipe)
    assert loaded.name == recipe.stem


def test_recipes_include_the_demo_and_both_reference_recipes():
    assert {"demo.yaml", "ham10000_mobilenet.yaml", "isic_vgg19.yaml"} <= {p.name for p in RECIPES}


def test_defaults_fill_what_a_file_leaves_out(tmp_path):
    loaded = params.load(write(tmp_path, "name: x\ntrain: {epochs: 3}\n"))
    assert loaded.train.epochs == 3
    assert loaded.train.batch_size == 32
    assert loaded.train.augmentation.horizontal_flip is False
    assert loaded.data.source == "generated"


def test_overrides_set_dotted_keys_parsed_as_yaml(tmp_path):
    loaded = params.load(write(tmp_path, "name: x\n"),
                         ["train.epochs=2", "model.weights=null", "model.dense_units=[8, 4]",
                          "train.class_weight={mel: 3}", "train.reduce_lr.patience=1"])
    assert loaded.train.epochs == 2
    assert loaded.model.weights is None
    assert loaded.model.dense_units == [8, 4]
    assert loaded.train.class_weight == {"mel": 3.0}
    assert loaded.train.reduce_lr.patience == 1


@pytest.mark.parametrize("text, override, named", [
    ("name: x\n", "train.epoch=1", "'train.epoch'"),
    ("name: x\n", "train.epochs=ten", "'train.epochs'"),
    ("name: x\n", "train.epochs=1.5", "'train.epochs'"),
    ("name: x\n", "train.epochs=0", "'train.epochs'"),
    ("name: x\n", "data.source=s3", "'data.source'"),
    ("name: x\n", "model.backbone=mobilenetv1", "'model.backbone'"),
    ("name: x\n", "model.dropout=1.5", "'model.dropout'"),
    ("name: x\n", "data.image_size=8", "'data.image_size'"),
    ("name: x\n", "train.augmentation.horizontal_flip=maybe", "'train.augmentation.horizontal_flip'"),
    ("name: x\n", "train.augmentation.fill_mode=mirror", "'train.augmentation.fill_mode'"),
    ("name: x\n", "train.class_weight=heavy", "'train.class_weight'"),
    ("name: x\n", "data.source=local", "'data.path'"),
    ("name: x\n", "model.weights=no/such/file.h5", "'model.weights'"),
    ("name: x\nmodel: {backbone: small_cnn}\n", "model.weights=imagenet", "'model.weights'"),
    ("name: x\nmodel: {weights: imagenet}\n", "model.alpha=0.6", "'model.alpha'"),
    ("name: x\n", "name=a/b", "'name'"),
    ("name: x\n", "seed=-1", "'seed'"),  # numpy's seeds are 32-bit unsigned: training would fail minutes later
    ("seed: 1\n", "seed=2", "'name'"),
    # progressive resizing needs full-size epochs after the downscaled ones, at a size below data.image_size
    ("name: x\ntrain: {fine_tune_epochs: 4}\n", "train.low_resolution_epochs=4", "'train.low_resolution_epochs'"),
    ("name: x\ntrain: {fine_tune_epochs: 4, low_resolution_epochs: 2}\n", "train.low_resolution=224",
     "'train.low_resolution'"),
    # the plain epochs are the last full-size fine-tuning epochs
    ("name: x\ntrain: {fine_tune_epochs: 4, low_resolution_epochs: 2}\n", "train.plain_epochs=3",
     "'train.plain_epochs'"),
    ("name: x\n", "train.plain_epochs=1", "'train.plain_epochs'"),
    # scale and offset alone train on frozen statistics, which batch-statistics BatchNorm does not have
    ("name: x\nmodel: {freeze_batch_norm: false}\n", "model.batch_norm_affine=true", "'model.batch_norm_affine'"),
    # the logit adjustment shifts a softmax's logits inside its cross-entropy
    ("name: x\ntrain: {loss: focal}\n", "train.logit_adjustment=1", "'train.logit_adjustment'"),
    ("name: x\ntrain: {optimizer: adamw}\n", "train.momentum=0.9", "'train.momentum'"),  # Adam has its own
])
def test_bad_parameter_names_the_key_and_the_file(tmp_path, text, override, named):
    path = write(tmp_path, text)
    with pytest.raises(ParamsError) as error:
        params.load(path, [override])
    assert named in str(error.value)
    assert str(path) in str(error.value)


def test_unknown_key_suggests_the_close_one(tmp_path):
    with pytest.raises(ParamsError, match="did you mean 'epochs'"):
        params.load(write(tmp_path, "name: x\ntrain: {epoch: 1}\n"))


def test_a_section_that_is_not_a_mapping_is_refused(tmp_path):
    with pytest.raises(ParamsError, match="'train' .* must be a mapping"):
        params.load(write(tmp_path, "name: x\ntrain: 5\n"))


def test_malformed_override_says_the_form(tmp_path):
    with pytest.raises(ParamsError, match="dotted.key=value"):
        params.load(write(tmp_path, "name: x\n"), ["train.epochs"])


def test_missing_file_points_at_the_recipes(tmp_path):
    with pytest.raises(ParamsError, match="params/demo.yaml"):
        params.load(tmp_path / "nope.yaml")


def test_saved_params_load_back_identical(tmp_path):
    loaded = params.load(paths.PARAMS_DIR / "ham10000_mobilenet.yaml")
    params.save(loaded, tmp_path / "params.yaml")
    assert params.load_run(tmp_path) == loaded


def test_backbone_choices_match_the_model_registry():
    from lib import models

    allowed = params.ModelParams.__dataclass_fields__["backbone"].metadata["choices"]
    assert set(allowed) == set(models.BACKBONES)


def test_a_bad_params_file_fails_from_the_command_line_quickly(tmp_path):
    path = write(tmp_path, "name: x\ntrain: {epochs: -1}\n")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "lib", "run", str(path), "--outputs", str(tmp_path / "out")],
                            cwd=paths.PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert "'train.epochs'" in result.stderr and str(path) in result.stderr
    assert not (tmp_path / "out").exists()
    assert time.monotonic() - started < 10, "validation must not wait for TensorFlow"


def check_from_the_command_line(*arguments, memory_bytes=None):
    """`python -m lib check ARGUMENTS` in a subprocess (its address space capped at `memory_bytes`):
    (return code, stderr, seconds)."""
    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "lib", "check", *map(str, arguments)], cwd=paths.PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120, preexec_fn=cap_memory if memory_bytes else None)
    return result.returncode, result.stderr, time.monotonic() - started


def assert_one_error_line(returncode, stderr, *fragments):
    assert returncode == 1 and "Traceback" not in stderr, stderr[-2000:]
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr[-2000:]
    for fragment in fragments:
        assert fragment in stderr, stderr


def billion_laughs(levels=9):
    """A params file whose train.monitor, built from nested aliases, expands to 9**levels strings."""
    lines = ["name: laughs", "train:", "  monitor:", "    - &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"    - &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]" for level in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_file_fails_at_once_in_one_line(tmp_path):
    # Before: about 45 s and gigabytes, then a MemoryError traceback echoing the value. The 1.5 GB cap
    # keeps a regression from taking the machine down with it.
    returncode, stderr, seconds = check_from_the_command_line(write(tmp_path, billion_laughs()),
                                                              memory_bytes=1_500_000_000)
    assert_one_error_line(returncode, stderr, "anchors and aliases", "line 4")
    assert seconds < 10


def test_anchors_and_aliases_are_refused_even_small_ones(tmp_path):
    with pytest.raises(ParamsError, match="anchors and aliases"):
        params.load(write(tmp_path, "name: x\ntrain: {monitor: &m val_loss}\nmodel: {weights: *m}\n"))


@pytest.mark.parametrize("text, problem", [
    ("name: x\nmodel: {dense_units: " + "[" * 5000 + "]" * 5000 + "}\n", "nest more than"),  # was RecursionError
    ("name: x\nseed: 2001-13-45\n", "month must be in 1..12"),  # was a ValueError from the date constructor
    ("name: x\nseed: " + "9" * 5000 + "\n", "Exceeds the limit"),  # was a ValueError from int()
    ("name: x\n" + "# padding\n" * 20_000, "larger than"),  # 200 KB: a params file is a few KB
], ids=["deep nesting", "impossible date", "5000-digit integer", "200 KB file"])
def test_hostile_yaml_is_refused_with_a_params_error(tmp_path, text, problem):
    with pytest.raises(ParamsError, match=problem):
        params.load(write(tmp_path, text))


def test_a_long_bad_value_is_quoted_short(tmp_path):
    huge = "x" * 10_000
    with pytest.raises(ParamsError) as error:
        params.load(write(tmp_path, f"name: x\ntrain: {{optimizer: {huge}, monitor: [{huge}, {huge}]}}\n"),
                    [f"data.dataset={huge}"])
    message = str(error.value)
    assert "'train.optimizer'" in message and "..." in message
    assert len(message) < 400, message


def test_a_bad_value_from_an_override_names_the_override_and_the_file(tmp_path):
    path = write(tmp_path, "name: x\ntrain: {epochs: 3}\n")
    with pytest.raises(ParamsError) as error:
        params.load(path, ["seed=1", "train.epochs=ten"])
    assert "from -p train.epochs=ten" in str(error.value) and str(path) in str(error.value)


def test_a_bad_value_from_the_file_is_not_blamed_on_an_override(tmp_path):
    path = write(tmp_path, "name: x\ntrain: {epochs: ten}\n")
    with pytest.raises(ParamsError) as error:
        params.load(path, ["train.batch_size=8"])
    assert f"in {path}" in str(error.value) and "-p" not in str(error.value)


def test_the_latest_override_of_a_key_is_the_one_named(tmp_path):
    with pytest.raises(ParamsError, match=r"from -p train=\{epochs: 0\}"):
        params.load(write(tmp_path, "name: x\n"), ["train.epochs=2", "train={epochs: 0}"])


@pytest.mark.parametrize("written, expected", [
    ("1e-4", 1e-4), ("1E-4", 1e-4), ("1e+1", 10.0), ("1.5e-3", 1.5e-3), ("2E0", 2.0), (".5", 0.5), ("5.", 5.0),
    ("0.000_1", 1e-4), ("1_0e-1", 1.0), ("3", 3.0),
])
def test_a_float_parameter_takes_numbers_as_python_writes_them(tmp_path, written, expected):
    from_file = params.load(write(tmp_path, f"name: x\ntrain:\n  learning_rate: {written}\n"))
    from_override = params.load(write(tmp_path, "name: x\n"), [f"train.learning_rate={written}"])
    assert from_file.train.learning_rate == from_override.train.learning_rate == pytest.approx(expected)
    assert isinstance(from_file.train.learning_rate, float)


@pytest.mark.parametrize("written, expected", [("12", 12), ("1_000", 1000), ("1e3", 1000), ("2.0", 2)])
def test_an_integer_parameter_takes_any_exactly_integral_number(tmp_path, written, expected):
    loaded = params.load(write(tmp_path, "name: x\n"), [f"train.epochs={written}"])
    assert loaded.train.epochs == expected and isinstance(loaded.train.epochs, int)


@pytest.mark.parametrize("written", [".nan", ".NaN", ".inf", "-.inf", "1e999", "-1e999", "1.0e+999"])
def test_nan_and_infinity_are_refused_wherever_a_number_is_expected(tmp_path, written):
    for key in ("train.learning_rate", "data.max_bad_fraction", "train.class_weight.mel"):
        with pytest.raises(ParamsError, match=f"'{key}' from -p .* must be a finite number"):
            params.load(write(tmp_path, "name: x\n"), [f"{key}={written}"])
    with pytest.raises(ParamsError, match="'train.reduce_lr.min_lr' in .* must be a finite number"):
        params.load(write(tmp_path, f"name: x\ntrain: {{reduce_lr: {{min_lr: {written}}}}}\n"))


@pytest.mark.parametrize("written", ["nan", "inf", "NaN", "Infinity"])
def test_words_for_nan_and_infinity_are_not_numbers(tmp_path, written):
    with pytest.raises(ParamsError, match="'train.learning_rate' .* must be a number"):
        params.load(write(tmp_path, "name: x\n"), [f"train.learning_rate={written}"])


def test_an_integer_too_large_for_a_float_is_refused_as_a_float(tmp_path):
    with pytest.raises(ParamsError, match="'train.learning_rate' .* must be a finite number"):
        params.load(write(tmp_path, "name: x\n"), ["train.learning_rate=" + "9" * 400])


@pytest.mark.parametrize("key, word", [("export.browser_parity", "off"), ("export.browser_parity", "on"),
                                       ("train.feature_cache", "off"), ("train.feature_cache", "on"),
                                       ("train.mixed_precision", "off")])
def test_every_on_off_choice_can_be_written_plainly(tmp_path, key, word):
    section, name = key.split(".")
    from_file = params.load(write(tmp_path, f"name: x\n{section}:\n  {name}: {word}\n"))
    from_override = params.load(write(tmp_path, "name: x\n"), [f"{key}={word}"])
    assert getattr(getattr(from_file, section), name) == getattr(getattr(from_override, section), name) == word


def test_true_false_parameters_still_take_yes_no_on_off(tmp_path):
    loaded = params.load(write(tmp_path, "name: x\ndata: {test_as_validation: yes}\n"
                                         "train: {augmentation: {horizontal_flip: on, vertical_flip: No}}\n"),
                         ["train.deterministic=OFF"])
    assert loaded.data.test_as_validation is True and loaded.train.deterministic is False
    assert loaded.train.augmentation.horizontal_flip is True and loaded.train.augmentation.vertical_flip is False


@pytest.mark.parametrize("name", ["off", "yes", "1e5", "1_000", "null", "run with spaces é"])
def test_saved_params_read_back_the_same_here_and_by_plain_pyyaml(tmp_path, name):
    loaded = params.load(write(tmp_path, f"name: {json.dumps(name)}\nexport: {{browser_parity: off}}\n"))
    params.save(loaded, tmp_path / "params.yaml")
    assert params.load_run(tmp_path) == loaded
    plain = yaml.safe_load((tmp_path / "params.yaml").read_text())  # as lib.report reads it
    assert plain["name"] == name and plain["export"]["browser_parity"] == "off"


def test_a_params_file_that_is_not_utf8_is_one_line_from_the_command_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    assert_one_error_line(*check_from_the_command_line(path)[:2], "not UTF-8", "byte 0xe9", "save it as UTF-8")


def test_a_folder_given_as_params_file_is_one_line_from_the_command_line(tmp_path):
    assert_one_error_line(*check_from_the_command_line(tmp_path)[:2], "is a folder, not a params file")


def test_an_unreadable_params_file_is_one_line_from_the_command_line(tmp_path, monkeypatch, capsys):
    def denied(*args, **kwargs):  # as open() fails without read permission (root reads anything, so faked)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(params, "open", denied, raising=False)
    papermill_log = logging.getLogger("papermill")
    level = papermill_log.level
    try:
        assert cli.main(["check", str(write(tmp_path, "name: x\n"))]) == 1
    finally:
        papermill_log.setLevel(level)  # main() quiets papermill for the whole process: later tests read its log
    assert capsys.readouterr().err == f"error: cannot read params file {tmp_path / 'run.yaml'}: Permission denied\n"


def test_a_run_name_too_long_for_the_file_system_is_one_line_before_anything_starts(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    name = "é" * (limit // 2 + 1)  # fewer characters than the limit, but 2 bytes each in UTF-8
    command = [sys.executable, "-m", "lib", "run", str(write(tmp_path, "name: x\n")), "--outputs",
               str(tmp_path / "out"), "--name", name]
    result = subprocess.run(command, cwd=paths.PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert_one_error_line(result.returncode, result.stderr, "'name' from --name",
                          f"{len(name.encode())} bytes", f"at most {limit}")
    assert not (tmp_path / "out").exists()


def test_a_run_name_too_long_in_the_file_fails_the_check_command(tmp_path):
    limit = params.name_max(paths.OUTPUTS_DIR)
    returncode, stderr, _ = check_from_the_command_line(write(tmp_path, f"name: {'a' * (limit + 1)}\n"))
    assert_one_error_line(returncode, stderr, f"'name' in {tmp_path / 'run.yaml'}", f"at most {limit}")


def test_a_weights_file_of_another_width_names_the_alpha_it_holds(tmp_path):
    import h5py

    weights = tmp_path / "mobilenet_0.75_no_top.h5"
    with h5py.File(weights, "w") as file:
        file.create_dataset("conv1/conv1/kernel:0", data=np.zeros((3, 3, 3, 24), "float32"))
    text = f"name: x\nmodel: {{backbone: mobilenet, weights: {weights}}}\n"
    with pytest.raises(ParamsError, match="holds a network of width alpha 0.75 .*24 filters.*set model.alpha: 0.75"):
        params.load(write(tmp_path, text))
    assert params.load(write(tmp_path, text), ["model.alpha=0.75"]).model.alpha == 0.75


def test_a_recipe_extends_another_and_sets_only_what_differs(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\ntrain: {epochs: 7, learning_rate: 0.01, augmentation: "
                                        "{horizontal_flip: true}}\n")
    (tmp_path / "variant.yaml").write_text("extends: base.yaml\nname: variant\ntrain: {epochs: 9, augmentation: "
                                           "{vertical_flip: true}}\n")
    loaded = params.load(tmp_path / "variant.yaml", ["train.learning_rate=0.002"])
    assert (loaded.name, loaded.train.epochs, loaded.train.learning_rate) == ("variant", 9, 0.002)
    assert loaded.train.augmentation.horizontal_flip and loaded.train.augmentation.vertical_flip
    (tmp_path / "base.yaml").write_text("extends: variant.yaml\nname: base\n")
    with pytest.raises(ParamsError, match="makes a loop"):
        params.load(tmp_path / "variant.yaml")
    (tmp_path / "other.yaml").write_text("extends: ../base.yaml\nname: other\n")
    with pytest.raises(ParamsError, match="must name a params file in the same folder"):
        params.load(tmp_path / "other.yaml")


def test_a_switch_that_became_a_choice_still_reads_true_and_false(tmp_path):
    assert params.load(write(tmp_path, "name: x\nevaluate: {tta: true}\n")).evaluate.tta == "flips"
    assert params.load(write(tmp_path, "name: x\n"), ["evaluate.tta=false"]).evaluate.tta == "off"
    assert params.load(write(tmp_path, "name: x\n"), ["evaluate.tta=dihedral"]).evaluate.tta == "dihedral"
