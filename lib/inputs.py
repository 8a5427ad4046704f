"""Training input: processed PNGs (or cached backbone features) turned into `tf.data` pipelines, shuffled or
class-balanced, augmented in the recipes' vocabulary by Keras preprocessing layers, plus class weights.

Augmentation runs in `dataset.map` on training batches only, so it never becomes part of the saved (and
exported) model. Every random choice (order, sampling, augmentation) comes from the run's `seed`.
"""

import functools
import itertools
import logging
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from lib import registry
from lib.errors import TrainingError

log = logging.getLogger(__name__)

AUGMENTATION_KEYS = ("rotation_range", "width_shift_range", "height_shift_range", "zoom_range",
                     "horizontal_flip", "vertical_flip", "rotate90", "brightness", "contrast", "saturation",
                     "hue", "erasing", "fill_mode", "one_resampling")
# decoded uint8 images taking up to this share of the available memory are held in memory (read from disk once,
# not every epoch: on Colab, not from Drive)
MEMORY_FRACTION = 0.3
# batch of the one-pass feature computation: activations, not images, dominate its memory (a VGG19 batch of 32 at
# 224 px holds ~1.5 GB of them), and inference throughput hardly depends on the batch
FEATURE_BATCH_SIZE = 8


def decode_processed(path):
    """A processed PNG (as notebook 02 writes them) as a uint8 RGB tensor (S, S, 3): the one decoder of
    processed images, used by the input pipeline and, through `load_processed`, by everything else."""
    return tf.io.decode_png(tf.io.read_file(path), channels=3)


def load_processed(paths, image_size=None):
    """Processed PNGs as one uint8 RGB array (N, S, S, 3); every image must be `image_size` square when given."""
    paths = [str(path) for path in paths]
    if not paths:
        return np.zeros((0, image_size or 0, image_size or 0, 3), np.uint8)
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(decode_processed, num_parallel_calls=tf.data.AUTOTUNE,
                                                             deterministic=True)
    images = [image.numpy() for image in dataset]
    sizes = {image.shape for image in images}
    expected = None if image_size is None else (image_size, image_size, 3)
    if len(sizes) > 1 or (expected and sizes != {expected}):
        raise TrainingError(f"processed images have sizes {sorted(sizes)}, expected {expected or 'one size'}: "
                            f"rerun notebook 02_preprocess (data.image_size: {image_size})")
    return np.stack(images)


# ---- augmentation ---------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="lib.inputs")
class RandomTranspose(keras.layers.Layer):
    """Swaps height and width of each square image with probability 1/2. With random horizontal and vertical
    flips this draws uniformly from all 8 rotations and reflections (lesions have no up, down, left or right)."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        swap = keras.random.uniform((keras.ops.shape(images)[0], 1, 1, 1), seed=self.seed_generator) < 0.5
        return keras.ops.where(swap, keras.ops.transpose(images, (0, 2, 1, 3)), images)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="lib.inputs")
class RandomGeometry(keras.layers.Layer):
    """The geometric augmentation in one resampling: each image's random flips, transpose, rotation, shift and
    zoom (drawn as RandomFlip, RandomTranspose, RandomRotation, RandomTranslation and RandomZoom draw them, applied
    in that order) composed into one affine map, so each (square) image is interpolated once. One layer per
    transform interpolates once per layer: ~2.8x the compute (benchmarks/RESULTS.md section 3), and every pass
    blurs a little more."""

    def __init__(self, rotation_range=0.0, width_shift_range=0.0, height_shift_range=0.0, zoom_range=0.0,
                 horizontal_flip=False, vertical_flip=False, rotate90=False, fill_mode="nearest", seed=None,
                 strength=None, **kwargs):
        super().__init__(**kwargs)
        self.options = {"rotation_range": rotation_range, "width_shift_range": width_shift_range,
                        "height_shift_range": height_shift_range, "zoom_range": zoom_range,
                        "horizontal_flip": horizontal_flip, "vertical_flip": vertical_flip, "rotate90": rotate90}
        self.fill_mode, self.seed = fill_mode, seed
        # a tf.Variable in [0, 1], read at each call, scaling the turn, the shift and the zoom's deviation from 1 (the
        # flips and transposes stay): at 0 every image is one of its 8 exact right-angle views. None: 1
        self.strength = strength
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        size = keras.ops.cast(keras.ops.shape(images)[1], "float32")
        matrix, shift = self.source_maps(keras.ops.shape(images)[0], size)
        centre = (size - 1.0) / 2.0  # pixel centres sit on integers: flips and transposes land on pixels exactly
        offset = centre + shift - centre * keras.ops.sum(matrix, axis=2)
        transform = keras.ops.concatenate([matrix[:, 0], offset[:, :1], matrix[:, 1], offset[:, 1:],
                                           keras.ops.zeros_like(offset)], axis=1)
        return keras.ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode=self.fill_mode)

    def source_maps(self, batch, size):
        """For each image, the (2x2 matrix, shift in pixels) taking an output pixel's (x, y), relative to the
        centre, to where it is read from in the input: the layers' own maps, chained in their order."""
        ops, options = keras.ops, self.options

        def uniform(low, high):
            return keras.random.uniform((batch,), low, high, seed=self.seed_generator)

        def sign(enabled):
            return ops.where(uniform(0.0, 1.0) < 0.5, -1.0, 1.0) if enabled else ops.ones((batch,))

        zeros = ops.zeros((batch,))
        x_sign, y_sign = sign(options["horizontal_flip"]), sign(options["vertical_flip"])
        swap = uniform(0.0, 1.0) < 0.5 if options["rotate90"] else ops.zeros((batch,), "bool")
        matrix = _matrices(ops.where(swap, zeros, x_sign), ops.where(swap, x_sign, zeros),
                           ops.where(swap, y_sign, zeros), ops.where(swap, zeros, y_sign))
        # the same draws at any strength; at 1, x * 1 + 0 leaves each of them exactly as drawn
        strength = 1.0 if self.strength is None else ops.convert_to_tensor(self.strength)
        limit = np.deg2rad(options["rotation_range"])
        angle = uniform(-limit, limit) * strength if limit else zeros
        matrix = ops.matmul(matrix, _matrices(ops.cos(angle), -ops.sin(angle), ops.sin(angle), ops.cos(angle)))
        shift = ops.stack([uniform(-options["width_shift_range"], options["width_shift_range"]) * size,
                           uniform(-options["height_shift_range"], options["height_shift_range"]) * size],
                          axis=1) * strength
        zoom = uniform(1.0 - options["zoom_range"], 1.0 + options["zoom_range"]) * strength + (1.0 - strength)
        shift = ops.einsum("bij,bj->bi", matrix, -shift)
        return matrix * zoom[:, None, None], shift

    def get_config(self):
        return {**super().get_config(), **self.options, "fill_mode": self.fill_mode, "seed": self.seed}


def _matrices(a, b, c, d):
    """A batch of 2x2 matrices [[a, b], [c, d]] from four (B,) tensors."""
    return keras.ops.reshape(keras.ops.stack([a, b, c, d], axis=1), (-1, 2, 2))


def augmentation_layers(rotation_range=0.0, width_shift_range=0.0, height_shift_range=0.0, zoom_range=0.0,
                        horizontal_flip=False, vertical_flip=False, rotate90=False, brightness=0.0, contrast=0.0,
                        saturation=0.0, hue=0.0, erasing=0.0, fill_mode="nearest", one_resampling=False, seed=None,
                        strength=None):
    """Keras preprocessing layers for the recipes' augmentation vocabulary (empty list: none).

    The first keys are ImageDataGenerator's: rotation_range in degrees (180 = any angle within +-180; Keras'
    RandomRotation takes a fraction of a turn), shifts and zoom as fractions of the image size. `rotate90`
    adds random transposes (with both flips: the 8 right-angle views). brightness / contrast / saturation / hue
    are the largest relative change (0.1 = +-10%), for pictures from other cameras and lights. `erasing` is the
    share of images in which Keras' RandomErasing (Zhong et al. 2017) replaces a rectangle of 2-33% of the image
    with noise, so no single patch (a ruler mark, a hair, one dot of a pattern) can decide the class.
    `one_resampling` draws the geometric keys (flips to zoom) as their layers do but applies them as one
    RandomGeometry layer: one interpolation per image instead of one per layer, scaled by `strength` (see
    RandomGeometry).
    """
    if fill_mode not in registry.FILL_MODES:
        raise ValueError(f"unknown fill_mode {fill_mode!r}; choose one of: {', '.join(registry.FILL_MODES)}")
    value_range = (0.0, 255.0)
    # each layer its own random stream: with one seed for all, every layer would draw the same decisions
    seeds = itertools.repeat(None) if seed is None else itertools.count(seed)
    augmenters = []
    geometry = {"rotation_range": rotation_range, "width_shift_range": width_shift_range,
                "height_shift_range": height_shift_range, "zoom_range": zoom_range, "horizontal_flip": horizontal_flip,
                "vertical_flip": vertical_flip, "rotate90": rotate90}
    if one_resampling and any(geometry.values()):
        augmenters.append(RandomGeometry(**geometry, fill_mode=fill_mode, seed=next(seeds), strength=strength))
        horizontal_flip = vertical_flip = rotate90 = False
        rotation_range = width_shift_range = height_shift_range = zoom_range = 0.0
    # one layer per flip: Keras' RandomFlip("horizontal_and_vertical") draws one decision for both axes, which
    # gives only 2 of the 4 flip combinations
    if horizontal_flip:
        augmenters.append(keras.layers.RandomFlip("horizontal", seed=next(seeds)))
    if vertical_flip:
        augmenters.append(keras.layers.RandomFlip("vertical", seed=next(seeds)))
    if rotate90:
        augmenters.append(RandomTranspose(seed=next(seeds)))
    if rotation_range:
        augmenters.append(keras.layers.RandomRotation(rotation_range / 360.0, fill_mode=fill_mode, seed=next(seeds)))
    if width_shift_range or height_shift_range:
        augmenters.append(keras.layers.RandomTranslation(height_shift_range, width_shift_range, fill_mode=fill_mode,
                                                         seed=next(seeds)))
    if zoom_range:
        augmenters.append(keras.layers.RandomZoom(zoom_range, fill_mode=fill_mode, seed=next(seeds)))
    if brightness:
        augmenters.append(keras.layers.RandomBrightness(brightness, value_range=value_range, seed=next(seeds)))
    if contrast:
        augmenters.append(keras.layers.RandomContrast(contrast, value_range=value_range, seed=next(seeds)))
    if saturation:
        augmenters.append(keras.layers.RandomSaturation((0.5 - saturation / 2, 0.5 + saturation / 2),
                                                        value_range=value_range, seed=next(seeds)))
    if hue:
        augmenters.append(keras.layers.RandomHue(hue, value_range=value_range, seed=next(seeds)))
    if erasing:
        # (p, p): a single float would make Keras draw each batch's probability from [0, p]
        augmenters.append(keras.layers.RandomErasing((erasing, erasing), value_range=value_range, seed=next(seeds)))
    return augmenters


def asks_for_augmentation(augmentation):
    """Whether `augmentation` (a dict of AUGMENTATION_KEYS, or None) changes images at all (fill_mode and
    one_resampling alone do not); answered without building layers, which would draw from Keras' global random
    state."""
    return any(value for key, value in dict(augmentation or {}).items() if key not in ("fill_mode", "one_resampling"))


def make_augmenter(augmentation, seed=None, strength=None):
    """A function float images (B, S, S, 3) in [0, 255] -> augmented images for `dataset.map`, or None when
    `augmentation` (a dict of AUGMENTATION_KEYS, or None) asks for nothing. `strength`: a tf.Variable, read at each
    batch; at 0 only the random flips and transposes remain (every image one of its 8 exact right-angle views, as
    test-time views are), at 1 all of `augmentation`; None: always all."""
    augmentation = dict(augmentation or {})
    unknown = sorted(set(augmentation) - set(AUGMENTATION_KEYS))
    if unknown:
        raise ValueError(f"unknown augmentation keys {unknown}; known: {', '.join(AUGMENTATION_KEYS)}")
    if not asks_for_augmentation(augmentation):
        return None
    augmenters = augmentation_layers(**augmentation, seed=seed, strength=strength)
    # flips and transposes stay at strength 0; RandomGeometry scales the rest of its map itself
    weakened_inside_or_kept = (RandomGeometry, RandomTranspose, keras.layers.RandomFlip)

    def augment(images):
        for layer in augmenters:
            if strength is None or isinstance(layer, weakened_inside_or_kept):
                images = layer(images, training=True)
            else:
                images = unless_plain(strength, functools.partial(layer, training=True), images)
        return tf.clip_by_value(images, 0.0, 255.0)
    return augment


def unless_plain(strength, transform, *tensors):
    """`transform(*tensors)` while the tf.Variable `strength` is above 0, the tensors unchanged at 0 (then the
    transform draws nothing from its random stream)."""
    return tf.cond(strength > 0, lambda: transform(*tensors), lambda: tensors[0] if len(tensors) == 1 else tensors)


def make_mixup(alpha, seed=None, strength=None):
    """A function (images, one-hot targets) batches -> the same blended pairwise by Keras' MixUp layer (weights
    drawn from Beta(alpha, alpha)) for `dataset.map`, or None when alpha is 0. `strength` as in `make_augmenter`:
    no blending at 0."""
    if not alpha:
        return None
    mix_up = keras.layers.MixUp(alpha=alpha, seed=seed)

    def blend(images, targets):
        mixed = mix_up({"images": images, "labels": targets}, training=True)
        return mixed["images"], mixed["labels"]
    return blend if strength is None else functools.partial(unless_plain, strength, blend)


def augmented_examples(image, augmentation, count=9, seed=42):
    """`count` augmented versions of one RGB [0, 255] image (S, S, 3), for showing what the model sees:
    float32 (count, S, S, 3). Without augmentation, copies of the image."""
    images = np.repeat(np.asarray(image, np.float32)[None], count, axis=0)
    augment = make_augmenter(augmentation, seed=seed)
    return images if augment is None else keras.ops.convert_to_numpy(augment(images))


# ---- datasets -------------------------------------------------------------------------------------

def image_dataset(paths, labels, num_classes, image_size, batch_size, shuffle=False, sampling="shuffle", seed=42,
                  augment=None, mix=None, drop_remainder=False, in_memory=True, resize_to=None):
    """Batches of (float32 RGB [0, 255] (B, S, S, 3), one-hot float32 (B, num_classes)) from processed PNGs.

    With `in_memory` (and when they fit in MEMORY_FRACTION of the memory), the images are decoded once, here, and
    served from memory; otherwise each epoch reads them from disk. `shuffle` reshuffles every epoch from `seed`;
    `sampling: balanced` draws every class equally often, `sqrt` by the square root of its count (as many images per
    epoch as there are); `augment` (from `make_augmenter`) runs on whole batches, then `mix` (from `make_mixup`) on
    (images, targets). `resize_to` (px) serves the images (of `image_size`) downscaled, before augmentation."""
    if len(paths) != len(labels):
        raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
    paths = [str(path) for path in paths]
    if in_memory and len(paths) * image_size * image_size * 3 <= MEMORY_FRACTION * available_memory():
        images = load_processed(paths, image_size)
        images = tf.constant(images if resize_to is None else downscale(images, resize_to))

        def lookup(index):
            return tf.cast(tf.gather(images, index), tf.float32)
    else:
        table = tf.constant(paths)

        def lookup(index):
            image = tf.ensure_shape(decode_processed(tf.gather(table, index)), (image_size, image_size, 3))
            return tf.cast(image if resize_to is None else downscale(image, resize_to), tf.float32)
    return _batches(lookup, labels, num_classes, batch_size, shuffle, sampling, seed, augment, drop_remainder, mix)


def downscale(images, size):
    """uint8 images (..., S, S, 3) averaged down to (..., size, size, 3) (area interpolation, as OpenCV's INTER_AREA
    in preprocessing), rounded back to uint8."""
    resized = tf.image.resize(images, (size, size), method="area")
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def available_memory():
    """Bytes of memory available to new allocations (/proc/meminfo MemAvailable; total memory elsewhere)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def feature_dataset(features, labels, num_classes, batch_size, shuffle=False, sampling="shuffle", seed=42,
                    drop_remainder=False):
    """Batches of (cached pooled features (B, c), one-hot labels), in the same order `image_dataset` gives the
    images for the same seed, for training the head alone."""
    values = tf.constant(np.asarray(features, np.float32))
    return _batches(lambda index: tf.gather(values, index), labels, num_classes, batch_size, shuffle, sampling, seed,
                    None, drop_remainder)


def _batches(lookup, labels, num_classes, batch_size, shuffle, sampling, seed, augment, drop_remainder, mix=None):
    labels = np.asarray(labels, np.int32)
    if sampling not in registry.SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; choose one of: {', '.join(registry.SAMPLINGS)}")
    if sampling in registry.SAMPLING_EXPONENTS and shuffle:
        indices = _resampled_indices(labels, seed, registry.SAMPLING_EXPONENTS[sampling])
    else:
        indices = tf.data.Dataset.from_tensor_slices(np.arange(len(labels), dtype=np.int64))
        if shuffle:
            indices = indices.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    one_hot = tf.one_hot(labels, num_classes)
    dataset = indices.map(lambda index: (lookup(index), tf.gather(one_hot, index)),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if augment is not None:
        dataset = dataset.map(lambda images, targets: (augment(images), targets),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if mix is not None:
        dataset = dataset.map(mix, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    # tensors in memory, not files: multi-worker training shards them by element
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    # no autotuning model: with it, deleting an epoch's iterator sometimes waited seconds to a minute, both cores
    # idle, for the model's thread (py-spy: ~RootDataset::Iterator); without it the same CPU seconds and images per
    # second (benchmarks/RESULTS.md sections 3 and 7)
    options.autotune.enabled = False
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _resampled_indices(labels, seed, exponent):
    """Indices into `labels`, as many per epoch as there are labels, each present class drawn in proportion to
    its count ** `exponent` (0: equally often), each class's images reshuffled whenever they are used up."""
    present, counts = np.unique(labels, return_counts=True)
    shares = _drawn_shares(counts, exponent)
    per_class = [tf.data.Dataset.from_tensor_slices(np.flatnonzero(labels == label).astype(np.int64))
                 .shuffle(int(count), seed=seed + int(label), reshuffle_each_iteration=True)
                 .repeat() for label, count in zip(present, counts)]
    mixed = tf.data.Dataset.sample_from_datasets(per_class, weights=shares.tolist(), seed=seed,
                                                 rerandomize_each_iteration=True)
    return mixed.take(len(labels))


def batch_class_shares(labels, num_classes, sampling):
    """Each class's expected share of the training batches under `sampling` (shuffle: its share of `labels`; the
    resamplings: as `_resampled_indices` draws them), absent classes 0."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=num_classes)
    return _drawn_shares(counts, registry.SAMPLING_EXPONENTS.get(sampling, 1.0))


def _drawn_shares(counts, exponent):
    """Each class's share of the draws when a class is drawn in proportion to its count ** `exponent` (absent: 0)."""
    counts = np.asarray(counts, np.float64)
    shares = np.where(counts > 0, counts ** exponent, 0.0)
    return shares / shares.sum()


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


# ---- the feature cache ------------------------------------------------------------------------------

def feature_cache_key(model_params, image_size, seed, policy):
    """Folder name under features/ identifying what the backbone computes: backbone, width, weights, input
    size, pooling, colour constancy (when on) and compute dtype (randomly initialised weights depend on the seed)."""
    weights = model_params.weights
    if weights is None:
        weights_tag = f"random-seed{seed}"
    elif weights == "imagenet":
        weights_tag = "imagenet"
    else:
        path = Path(str(weights))
        weights_tag = f"{path.stem}-{path.stat().st_size}"
    colour = "" if model_params.colour_constancy == "none" else f"-{model_params.colour_constancy}"
    return (f"{model_params.backbone}-alpha{model_params.alpha}-{weights_tag}-{image_size}px-{model_params.pooling}"
            f"{colour}-{policy}")


def cached_features(feature_model, folder, split, paths, image_size):
    """Pooled backbone features (N, c) float32 of the images at `paths`, computed once by `feature_model`
    (raw RGB -> pooled features) and kept in `folder`/<split>.npy (recomputed when the image list changed)."""
    import json

    folder = Path(folder)
    features_path, paths_path = folder / f"{split}.npy", folder / f"{split}_paths.json"
    names = [Path(path).name for path in paths]
    if features_path.is_file() and paths_path.is_file() and json.loads(paths_path.read_text()) == names:
        log.info("feature cache hit: %s", features_path)
        return np.load(features_path)
    images = image_dataset(paths, np.zeros(len(paths), np.int32), 1, image_size, FEATURE_BATCH_SIZE, in_memory=False)
    log.info("computing %s features of %d images (one pass of the backbone)", split, len(paths))
    values = feature_model.predict(images.map(lambda x, y: x), verbose="auto").astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(features_path, values)
    paths_path.write_text(json.dumps(names))
    log.info("computed %s features %s into %s", split, values.shape, features_path)
    return values
