"""Specification of lib.inputs: manifest to tf.data, augmentation mapping, class weights, feature cache key."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from lib import inputs
from lib.errors import TrainingError

SHAPES = ("circle", "square", "triangle")


def draw_shape(shape, size, rng):
    """uint8 RGB size x size: a shape of its own hue at a random place on a noisy skin-coloured background."""
    background = np.clip(rng.normal((200, 160, 140), 12, (size, size, 3)), 0, 255).astype(np.uint8)
    picture = Image.fromarray(background)
    draw = ImageDraw.Draw(picture)
    radius = rng.integers(size // 5, size // 3)
    cx, cy = rng.integers(radius, size - radius, 2)
    # each shape has its own hue, as lesion classes differ in colour as well as form
    base = {"circle": (120, 40, 40), "square": (40, 40, 120), "triangle": (40, 110, 40)}.get(shape, (80, 80, 80))
    colour = tuple(int(c + rng.integers(-20, 20)) for c in base)
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=colour)
    return np.asarray(picture)


def write_run(run_dir, per_class=8, size=32, classes=SHAPES, seed=0):
    """A run folder as notebook 02 leaves it: data/manifest.csv, data/classes.json, processed PNGs.
    Each class gets `per_class` images, split 60% train / 40% validation. Returns run_dir."""
    rng = np.random.default_rng(seed)
    rows = []
    (run_dir / "data" / "processed").mkdir(parents=True, exist_ok=True)
    for label in classes:
        for index in range(per_class):
            image_id = f"{label}_{index:03d}"
            path = f"data/processed/{image_id}.png"
            Image.fromarray(draw_shape(label, size, rng)).save(run_dir / path)
            split = "train" if index < per_class * 0.6 else "validation"
            rows.append({"image_id": image_id, "label": label, "lesion_id": image_id, "split": split,
                         "path": path, "source_path": path, "original_width": size, "original_height": size})
    pd.DataFrame(rows).to_csv(run_dir / "data" / "manifest.csv", index=False)
    (run_dir / "data" / "classes.json").write_text(json.dumps({"labels": "dx", "classes": sorted(classes)}))
    return run_dir


def test_dataset_yields_raw_rgb_batches_with_one_hot_labels(tmp_path):
    run_dir = write_run(tmp_path, per_class=4)
    manifest, classes = inputs.read_split(run_dir)
    paths, labels = inputs.split_arrays(manifest, classes, "train", run_dir)
    images, targets = next(iter(inputs.make_dataset(paths, labels, len(classes), 32, batch_size=4)))
    assert images.shape == (4, 32, 32, 3) and images.dtype == "float32"
    assert 100 < float(np.max(images)) <= 255.0
    expected = np.asarray(Image.open(run_dir / manifest[manifest.split == "train"].path.iloc[0]), np.float32)
    np.testing.assert_array_equal(images[0], expected)
    np.testing.assert_array_equal(np.argmax(targets, axis=1), labels[:4])


def test_shuffled_dataset_order_depends_only_on_the_seed(tmp_path):
    run_dir = write_run(tmp_path, per_class=5)
    manifest, classes = inputs.read_split(run_dir)
    paths, labels = inputs.split_arrays(manifest, classes, "train", run_dir)

    def first_epoch(seed):
        dataset = inputs.make_dataset(paths, labels, len(classes), 32, batch_size=3, shuffle=True, seed=seed)
        return np.concatenate([images.numpy().sum(axis=(1, 2, 3)) for images, _ in dataset])

    np.testing.assert_array_equal(first_epoch(7), first_epoch(7))
    assert not np.array_equal(first_epoch(7), first_epoch(8))


def test_augmentation_maps_recipe_vocabulary_onto_keras_layers():
    layers = inputs.augmentation_layers(rotation_range=180, width_shift_range=0.1, height_shift_range=0.2,
                                        zoom_range=0.1, horizontal_flip=True, vertical_flip=True,
                                        fill_mode="reflect")
    by_type = {type(layer).__name__: layer for layer in layers}
    assert set(by_type) == {"RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom"}
    assert by_type["RandomFlip"].mode == "horizontal_and_vertical"
    assert by_type["RandomRotation"].factor == (-0.5, 0.5)  # 180 degrees = half a turn either way
    assert by_type["RandomRotation"].fill_mode == "reflect"
    translation, zoom = by_type["RandomTranslation"], by_type["RandomZoom"]
    assert (translation.width_lower, translation.width_upper) == (-0.1, 0.1)
    assert (translation.height_lower, translation.height_upper) == (-0.2, 0.2)
    assert (zoom.height_lower, zoom.height_upper) == (-0.1, 0.1)
    assert inputs.augmentation_layers() == []
    assert [layer.mode for layer in inputs.augmentation_layers(vertical_flip=True)] == ["vertical"]


def test_augmenter_changes_images_but_not_their_shape_and_none_means_off():
    assert inputs.make_augmenter(None) is None
    assert inputs.make_augmenter({"horizontal_flip": False, "fill_mode": "nearest"}) is None
    augment = inputs.make_augmenter({"rotation_range": 90, "horizontal_flip": True}, seed=1)
    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    augmented = keras.ops.convert_to_numpy(augment(images))
    assert augmented.shape == images.shape
    assert not np.allclose(augmented, images)
    with pytest.raises(ValueError, match="rotation"):
        inputs.make_augmenter({"rotation": 10})


def test_class_weights_balanced_explicit_and_unknown_class():
    labels = np.array([0, 0, 0, 1, 2, 2])
    classes = ["a", "b", "c"]
    assert inputs.class_weights(None, labels, classes) is None
    balanced = inputs.class_weights("balanced", labels, classes)
    assert balanced == pytest.approx({0: 6 / 9, 1: 2.0, 2: 1.0})
    assert inputs.class_weights({"b": 3}, labels, classes) == {0: 1.0, 1: 3.0, 2: 1.0}
    with pytest.raises(TrainingError, match="unknown classes \\['mel'\\].*a, b, c"):
        inputs.class_weights({"mel": 3}, labels, classes)


def test_missing_manifest_says_which_notebook_to_run(tmp_path):
    with pytest.raises(TrainingError, match="02_preprocess"):
        inputs.read_split(tmp_path)


def test_feature_cache_key_names_backbone_weights_size_and_pooling(tmp_path):
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"1234")
    options = {"backbone": "mobilenet", "alpha": 0.75, "weights": str(weights), "pooling": "max"}
    assert inputs.feature_cache_key(options, 224, seed=1) == "mobilenet-alpha0.75-w-4-224px-max"
    random = inputs.feature_cache_key({"backbone": "vgg19", "weights": None}, 64, seed=3)
    assert random == "vgg19-alpha1.0-random-seed3-64px-avg"
