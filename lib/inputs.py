"""Training input: the manifest written by notebook 02 turned into `tf.data` pipelines, augmentation
in the recipes' ImageDataGenerator vocabulary mapped onto Keras preprocessing layers, class weights.

Augmentation runs in `dataset.map` on training data only, so it never becomes part of the saved
(and exported) model.
"""

import json
import logging
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from lib import models
from lib.errors import TrainingError

log = logging.getLogger(__name__)

AUGMENTATION_KEYS = ("rotation_range", "width_shift_range", "height_shift_range", "zoom_range",
                     "horizontal_flip", "vertical_flip", "fill_mode")
# decoded images up to this size are kept in memory after the first epoch
MEMORY_CACHE_BYTES = 512 * 2**20
# batch of the one-pass feature computation: activations, not images, dominate its memory (a VGG19 batch of 32 at
# 224 px holds ~1.5 GB of them), and inference throughput hardly depends on the batch
FEATURE_BATCH_SIZE = 8


def read_split(run_dir):
    """The manifest (pandas DataFrame, one row per usable image) and the class names of classes.json."""
    run_dir = Path(run_dir)
    manifest_path, classes_path = run_dir / "data" / "manifest.csv", run_dir / "data" / "classes.json"
    for path in (manifest_path, classes_path):
        if not path.is_file():
            raise TrainingError(f"{path} not found: run notebooks/02_preprocess.ipynb for this run first")
    manifest = pd.read_csv(manifest_path)
    classes = json.loads(classes_path.read_text())["classes"]
    unknown = sorted(set(manifest["label"]) - set(classes))
    if unknown:
        raise TrainingError(f"{manifest_path} has labels {unknown} missing from {classes_path} ({classes})")
    return manifest, classes


def split_arrays(manifest, classes, split, run_dir):
    """(absolute PNG paths, integer labels in classes order) of one split (train|validation|test)."""
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        raise TrainingError(f"no {split} images in the manifest of {run_dir}; check data.validation_fraction")
    paths = [str(Path(run_dir) / path) for path in rows["path"]]
    labels = rows["label"].map({name: index for index, name in enumerate(classes)}).to_numpy(np.int32)
    return paths, labels


def augmentation_layers(rotation_range=0.0, width_shift_range=0.0, height_shift_range=0.0, zoom_range=0.0,
                        horizontal_flip=False, vertical_flip=False, fill_mode="nearest", seed=None):
    """Keras preprocessing layers equivalent to ImageDataGenerator's arguments (empty list: none).

    rotation_range is in degrees (180 = any angle within +-180), RandomRotation takes a fraction of a
    full turn; shifts and zoom are fractions of the image size, as in ImageDataGenerator.
    """
    if fill_mode not in ("nearest", "reflect", "wrap", "constant"):
        raise ValueError(f"unknown fill_mode {fill_mode!r}; choose one of: nearest, reflect, wrap, constant")
    augmenters = []
    if horizontal_flip or vertical_flip:
        mode = {(True, True): "horizontal_and_vertical", (True, False): "horizontal",
                (False, True): "vertical"}[(bool(horizontal_flip), bool(vertical_flip))]
        augmenters.append(keras.layers.RandomFlip(mode, seed=seed))
    if rotation_range:
        augmenters.append(keras.layers.RandomRotation(rotation_range / 360.0, fill_mode=fill_mode, seed=seed))
    if width_shift_range or height_shift_range:
        augmenters.append(keras.layers.RandomTranslation(height_shift_range, width_shift_range,
                                                         fill_mode=fill_mode, seed=seed))
    if zoom_range:
        augmenters.append(keras.layers.RandomZoom(zoom_range, fill_mode=fill_mode, seed=seed))
    return augmenters


def make_augmenter(augmentation, seed=None):
    """A function images -> augmented images for `dataset.map`, or None when `augmentation` (a dict of
    AUGMENTATION_KEYS, or None) asks for nothing."""
    augmentation = dict(augmentation or {})
    unknown = sorted(set(augmentation) - set(AUGMENTATION_KEYS))
    if unknown:
        raise ValueError(f"unknown augmentation keys {unknown}; known: {', '.join(AUGMENTATION_KEYS)}")
    augmenters = augmentation_layers(**augmentation, seed=seed)
    if not augmenters:
        return None

    def augment(images):
        for layer in augmenters:
            images = layer(images, training=True)
        return images
    return augment


def _decode(path, image_size):
    image = tf.io.decode_png(tf.io.read_file(path), channels=3)
    image = tf.ensure_shape(image, (image_size, image_size, 3))
    return tf.cast(image, tf.float32)


def make_dataset(paths, labels, num_classes, image_size, batch_size, shuffle=False, seed=42, augment=None,
                 drop_remainder=False, cache_in_memory=True):
    """Batches of (float32 RGB [0, 255] (B, S, S, 3), one-hot float32 (B, num_classes)).

    PNGs are decoded in parallel, order-preserving (deterministic for a given seed); shuffling
    reshuffles every epoch from `seed`; `augment` (from `make_augmenter`) runs after batching.
    With `cache_in_memory`, decoded images up to MEMORY_CACHE_BYTES stay in memory after the first
    epoch; a single pass (the feature cache) passes False, so its memory does not grow with the data.
    """
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    dataset = tf.data.Dataset.from_tensor_slices((list(paths), np.asarray(labels, np.int32)))
    dataset = dataset.map(lambda path, label: (_decode(path, image_size), tf.one_hot(label, num_classes)),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache_in_memory and len(paths) * image_size * image_size * 3 * 4 <= MEMORY_CACHE_BYTES:
        dataset = dataset.cache()
    return batch(dataset, len(paths), batch_size, shuffle, seed, augment, drop_remainder)


def batch(dataset, size, batch_size, shuffle=False, seed=42, augment=None, drop_remainder=False):
    """Shuffle (whole dataset, reshuffled each epoch from `seed`), batch, augment, prefetch.
    `drop_remainder`: for several replicas, where a last, smaller batch fails in Keras 3.15 / TF 2.19
    ("input depth must be evenly divisible by filter depth" inside a replica)."""
    if shuffle:
        dataset = dataset.shuffle(size, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if augment is not None:
        dataset = dataset.map(lambda images, targets: (augment(images), targets),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # tensors in memory, not files: multi-worker training shards them by element
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def class_weights(class_weight, labels, classes):
    """Keras `class_weight` ({class index: weight}) from None, "balanced" (sklearn's n / (k * count))
    or a mapping {class name: weight} (unlisted classes weigh 1)."""
    if class_weight is None:
        return None
    if class_weight == "balanced":
        present = np.unique(labels)
        weights = compute_class_weight("balanced", classes=present, y=labels)
        return {int(index): float(weight) for index, weight in zip(present, weights)}
    if isinstance(class_weight, dict):
        unknown = sorted(set(class_weight) - set(classes))
        if unknown:
            raise TrainingError(f"train.class_weight names unknown classes {unknown}; classes are: "
                                f"{', '.join(classes)}")
        return {index: float(class_weight.get(name, 1.0)) for index, name in enumerate(classes)}
    raise ValueError(f"class_weight must be None, 'balanced' or a mapping of class name to weight; "
                     f"got {class_weight!r}")


def feature_cache_key(model_options, image_size, seed):
    """Folder name under features/ identifying what the backbone computes: backbone, width, weights,
    input size and pooling (randomly initialised weights depend on the seed)."""
    weights = model_options.get("weights")
    if weights is None:
        weights_tag = f"random-seed{seed}"
    elif weights == "imagenet":
        weights_tag = "imagenet"
    else:
        path = Path(str(weights))
        weights_tag = f"{path.stem}-{path.stat().st_size}"
    return (f"{model_options['backbone']}-alpha{model_options.get('alpha', 1.0)}-{weights_tag}-"
            f"{image_size}px-{model_options.get('pooling', 'avg')}")


def cached_features(model, run_dir, key, split, paths, image_size, batch_size):
    """Pooled backbone features (N, c) float32 of the images at `paths`, computed once with
    `models.feature_model(model)` and kept in run_dir/features/<key>/<split>.npy (recomputed when the
    image list changed)."""
    folder = Path(run_dir) / "features" / key
    features_path, paths_path = folder / f"{split}.npy", folder / f"{split}_paths.json"
    relative = [str(Path(path).relative_to(run_dir)) if Path(path).is_relative_to(run_dir) else str(path)
                for path in paths]
    if features_path.is_file() and paths_path.is_file() and json.loads(paths_path.read_text()) == relative:
        log.info("feature cache hit: %s", features_path)
        return np.load(features_path)
    images = make_dataset(paths, np.zeros(len(paths), np.int32), 1, image_size, min(batch_size, FEATURE_BATCH_SIZE),
                          cache_in_memory=False)
    log.info("computing %s features of %d images (one pass of the backbone)", split, len(paths))
    values = models.feature_model(model).predict(images.map(lambda x, y: x), verbose="auto").astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(features_path, values)
    paths_path.write_text(json.dumps(relative))
    log.info("computed %s features %s into %s", split, values.shape, features_path)
    return values


def feature_dataset(model, run_dir, key, split, paths, labels, num_classes, image_size, batch_size,
                    shuffle=False, seed=42, drop_remainder=False):
    """Batches of (cached pooled features, one-hot labels), shuffled exactly like `make_dataset` with
    the same seed (the order depends only on seed and size), for training the head alone."""
    values = cached_features(model, run_dir, key, split, paths, image_size, batch_size)
    targets = tf.one_hot(np.asarray(labels, np.int32), num_classes)
    return batch(tf.data.Dataset.from_tensor_slices((values, targets)), len(paths), batch_size, shuffle, seed,
                 drop_remainder=drop_remainder)


def augmented_examples(image, augmentation, count=9, seed=42):
    """`count` augmented versions of one float RGB [0, 255] image (S, S, 3), for showing what the
    model sees: float32 (count, S, S, 3). Without augmentation, copies of the image."""
    images = np.repeat(np.asarray(image, np.float32)[None], count, axis=0)
    augment = make_augmenter(augmentation, seed=seed)
    return images if augment is None else keras.ops.convert_to_numpy(augment(images))
