"""Params: every recipe file validates; every bad key, type or value fails naming the key and the file."""

import subprocess
import sys
import time

import pytest

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
    ("seed: 1\n", "seed=2", "'name'"),
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
