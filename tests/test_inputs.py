"""Specification of lib.inputs: processed PNGs (or cached features) to tf.data, shuffled or class-balanced,
augmentation in the recipes' vocabulary, class weights, the feature cache."""

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

from lib import artifacts, inputs, params
from lib.errors import TrainingError


def train_split(run_dir):
    manifest = artifacts.read_manifest(run_dir, split="train")
    classes = artifacts.class_names(run_dir)
    return list(manifest["abs_path"]), manifest["label"].map(classes.index).to_numpy(np.int32), classes


def test_processed_images_decode_to_the_pixels_written(run_folder):
    from tests import runfolders

    pictures, _ = runfolders.lesion_images(3)
    paths = [run_folder / f"data/processed/img{index:04d}.png" for index in range(3)]
    np.testing.assert_array_equal(inputs.load_processed(paths, image_size=32), pictures)
    with pytest.raises(TrainingError, match="rerun notebook 02_preprocess \\(data.image_size: 64\\)"):
        inputs.load_processed(paths, image_size=64)


@pytest.mark.parametrize("in_memory", [True, False])
def test_dataset_yields_raw_rgb_batches_with_one_hot_labels(run_folder, in_memory):
    paths, labels, classes = train_split(run_folder)
    images, targets = next(iter(inputs.image_dataset(paths, labels, len(classes), 32, batch_size=4,
                                                     in_memory=in_memory)))
    assert images.shape == (4, 32, 32, 3) and images.dtype == "float32"
    np.testing.assert_array_equal(images[0], inputs.load_processed(paths[:1])[0].astype(np.float32))
    np.testing.assert_array_equal(np.argmax(targets, axis=1), labels[:4])


def test_images_are_held_in_memory_only_when_they_fit(run_folder, monkeypatch):
    paths, labels, classes = train_split(run_folder)
    decoded = []
    monkeypatch.setattr(inputs, "load_processed", lambda *args: decoded.append(args) or np.zeros((12, 32, 32, 3)))
    inputs.image_dataset(paths, labels, len(classes), 32, batch_size=4)
    assert len(decoded) == 1, "12 small images fit: decoded once, up front"
    monkeypatch.setattr(inputs, "available_memory", lambda: 12 * 32 * 32 * 3)  # less than 1/MEMORY_FRACTION of them
    streamed = inputs.image_dataset(paths, labels, len(classes), 32, batch_size=4)
    assert len(decoded) == 1 and next(iter(streamed))[0].shape == (4, 32, 32, 3), "read from disk batch by batch"
    assert inputs.available_memory() > 0


def test_shuffled_order_depends_only_on_the_seed_and_changes_every_epoch(run_folder):
    paths, labels, classes = train_split(run_folder)

    def epochs(seed, count=2):
        dataset = inputs.image_dataset(paths, labels, len(classes), 32, batch_size=3, shuffle=True, seed=seed)
        return [np.concatenate([images.numpy().sum(axis=(1, 2, 3)) for images, _ in dataset]) for _ in range(count)]

    first, second = epochs(7)
    np.testing.assert_array_equal(epochs(7)[0], first)
    assert not np.array_equal(first, second), "the order must change between epochs"
    assert not np.array_equal(epochs(8)[0], first)
    assert sorted(first) == sorted(second), "every image once per epoch"


@pytest.mark.parametrize("sampling, expected_shares", [("balanced", [1 / 3, 1 / 3, 1 / 3]),
                                                       ("sqrt", np.sqrt([22, 2, 2]) / np.sqrt([22, 2, 2]).sum())])
def test_resampling_draws_classes_equally_or_by_the_square_root_of_their_counts(make_run_folder, sampling,
                                                                                 expected_shares):
    run_dir = make_run_folder(per_class=4)
    paths, labels, classes = train_split(run_dir)
    assert np.bincount(labels).tolist() == [2, 2, 2]
    paths, labels = paths + paths[:2] * 10, np.concatenate([labels, [labels[0]] * 20])  # class 0 is 11x the others
    counts = collections.Counter()
    dataset = inputs.image_dataset(paths, labels, len(classes), 32, batch_size=8, shuffle=True, sampling=sampling)
    for _ in range(20):
        for _, targets in dataset:
            counts.update(np.argmax(targets, axis=1).tolist())
    assert sum(counts.values()) == 20 * len(labels), "an epoch has as many images as the split"
    shares = np.array([counts[index] for index in range(len(classes))]) / sum(counts.values())
    np.testing.assert_allclose(shares, expected_shares, atol=0.05)


def test_pipelines_run_without_the_autotuning_model_whose_thread_stalled_each_epochs_end(run_folder):
    paths, labels, classes = train_split(run_folder)
    augment = inputs.make_augmenter({"rotation_range": 90})
    for dataset in (inputs.image_dataset(paths, labels, len(classes), 32, batch_size=4, shuffle=True, augment=augment),
                    inputs.feature_dataset(np.zeros((len(paths), 3)), labels, len(classes), batch_size=4)):
        assert dataset.options().autotune.enabled is False
        assert dataset.options().deterministic is True


def test_feature_dataset_follows_the_image_order_of_the_same_seed(run_folder):
    paths, labels, classes = train_split(run_folder)
    features = np.arange(len(paths), dtype=np.float32)[:, None]
    images = inputs.image_dataset(paths, labels, len(classes), 32, batch_size=3, shuffle=True, seed=5)
    cached = inputs.feature_dataset(features, labels, len(classes), batch_size=3, shuffle=True, seed=5)
    image_order = [np.argmax(targets, axis=1) for _, targets in images]
    feature_order = [np.argmax(targets, axis=1) for _, targets in cached]
    np.testing.assert_array_equal(np.concatenate(image_order), np.concatenate(feature_order))


def test_augmentation_maps_recipe_vocabulary_onto_keras_layers():
    layers = inputs.augmentation_layers(rotation_range=180, width_shift_range=0.1, height_shift_range=0.2,
                                        zoom_range=0.1, horizontal_flip=True, vertical_flip=True, rotate90=True,
                                        brightness=0.1, contrast=0.2, saturation=0.2, hue=0.05, erasing=0.5,
                                        fill_mode="reflect")
    by_type = {type(layer).__name__: layer for layer in layers}
    assert [type(layer).__name__ for layer in layers] == [
        "RandomFlip", "RandomFlip", "RandomTranspose", "RandomRotation", "RandomTranslation", "RandomZoom",
        "RandomBrightness", "RandomContrast", "RandomSaturation", "RandomHue", "RandomErasing"]
    assert by_type["RandomErasing"].factor == (0.5, 0.5)  # every batch: half of its images, not up to half
    assert [layer.mode for layer in layers[:2]] == ["horizontal", "vertical"]  # independent decisions
    assert by_type["RandomRotation"].factor == (-0.5, 0.5)  # 180 degrees = half a turn either way
    assert by_type["RandomRotation"].fill_mode == "reflect"
    translation, zoom = by_type["RandomTranslation"], by_type["RandomZoom"]
    assert (translation.width_lower, translation.width_upper) == (-0.1, 0.1)
    assert (translation.height_lower, translation.height_upper) == (-0.2, 0.2)
    assert (zoom.height_lower, zoom.height_upper) == (-0.1, 0.1)
    assert inputs.augmentation_layers() == []
    assert [layer.mode for layer in inputs.augmentation_layers(vertical_flip=True)] == ["vertical"]


def test_one_resampling_puts_the_geometric_keys_into_one_layer_before_the_others():
    layers = inputs.augmentation_layers(rotation_range=180, zoom_range=0.1, horizontal_flip=True, rotate90=True,
                                        brightness=0.1, erasing=0.5, fill_mode="reflect", one_resampling=True)
    assert [type(layer).__name__ for layer in layers] == ["RandomGeometry", "RandomBrightness", "RandomErasing"]
    assert layers[0].options["rotation_range"] == 180 and layers[0].fill_mode == "reflect"
    assert [type(layer).__name__ for layer in inputs.augmentation_layers(hue=0.1, one_resampling=True)] == ["RandomHue"]
    assert inputs.make_augmenter({"one_resampling": True, "fill_mode": "reflect"}) is None


@pytest.mark.parametrize("one_resampling", [False, True])
def test_flips_with_transposes_reach_all_eight_right_angle_views(one_resampling):
    image = np.arange(3 * 3 * 3, dtype=np.float32).reshape(1, 3, 3, 3)
    augment = inputs.make_augmenter({"horizontal_flip": True, "vertical_flip": True, "rotate90": True,
                                     "one_resampling": one_resampling}, seed=0)
    views = {keras.ops.convert_to_numpy(augment(np.repeat(image, 64, axis=0)))[i].tobytes() for i in range(64)}
    expected = set()
    for turns in range(4):
        rotated = np.rot90(image[0], turns)
        expected |= {rotated.tobytes(), rotated[:, ::-1].copy().tobytes()}
    assert views == expected


def spot_positions(augmentation, count=200, size=41, spot=(12, 0)):
    """Where a bright 3x3 spot, `spot` (x, y) pixels from the centre of a dark square, ends up (relative to the
    centre, by its intensity centroid) in `count` augmented copies."""
    centre = size // 2
    image = np.zeros((count, size, size, 3), np.float32)
    image[:, centre + spot[1] - 1:centre + spot[1] + 2, centre + spot[0] - 1:centre + spot[0] + 2] = 255.0
    augmented = keras.ops.convert_to_numpy(inputs.make_augmenter(augmentation, seed=3)(image))[..., 0]
    rows, columns = np.mgrid[:size, :size] - centre
    mass = augmented.sum(axis=(1, 2))
    return np.stack([(augmented * columns).sum(axis=(1, 2)) / mass, (augmented * rows).sum(axis=(1, 2)) / mass], 1)


@pytest.mark.parametrize("one_resampling", [False, True])
def test_rotation_turns_about_the_centre_by_any_angle_within_the_range(one_resampling):
    for degrees in (180, 30):
        positions = spot_positions({"rotation_range": degrees, "one_resampling": one_resampling})
        np.testing.assert_allclose(np.hypot(*positions.T), 12.0, atol=0.3)
        angles = np.degrees(np.arctan2(positions[:, 1], positions[:, 0]))
        assert np.abs(angles).max() <= degrees + 1 and np.abs(angles).max() > 0.8 * degrees
        assert np.quantile(np.abs(angles), 0.5) == pytest.approx(degrees / 2, abs=0.2 * degrees)


@pytest.mark.parametrize("one_resampling", [False, True])
def test_zoom_and_shifts_move_the_spot_as_far_as_their_ranges_allow(one_resampling):
    distance = np.hypot(*spot_positions({"zoom_range": 0.2, "one_resampling": one_resampling}).T)
    assert 12 / 1.2 - 0.3 <= distance.min() < 11 and 13 < distance.max() <= 12 / 0.8 + 0.3  # zoom in and out
    moved = spot_positions({"width_shift_range": 0.1, "height_shift_range": 0.2, "one_resampling": one_resampling})
    offsets = np.abs(moved - [12, 0]).max(axis=0)
    assert 3.0 < offsets[0] <= 4.1 + 0.3 and 6.5 < offsets[1] <= 8.2 + 0.3  # 10% and 20% of 41 px


def test_one_resampling_composes_rotation_zoom_and_flips_into_one_sharper_interpolation():
    augmentation = {"rotation_range": 180, "zoom_range": 0.15, "horizontal_flip": True, "vertical_flip": True,
                    "rotate90": True, "fill_mode": "reflect"}
    for one_resampling in (False, True):  # constant fill: no reflected copies of the spot in the corners
        positions = spot_positions({**augmentation, "fill_mode": "constant", "one_resampling": one_resampling})
        distance = np.hypot(*positions.T)
        assert 12 / 1.15 - 0.3 <= distance.min() < 11 and 13 < distance.max() <= 12 / 0.85 + 0.3
        assert len(np.unique(np.sign(positions).round(), axis=0)) >= 4  # every quadrant
    image = np.random.default_rng(0).uniform(0, 255, (64, 32, 32, 3)).astype(np.float32)
    sharpness = {resample: keras.ops.convert_to_numpy(inputs.make_augmenter(
        {**augmentation, "one_resampling": resample}, seed=1)(image)).std() for resample in (False, True)}
    assert sharpness[True] > 1.1 * sharpness[False]  # white noise: every interpolation averages some of it away


def right_angle_views(image):
    return [np.rot90(flipped, turns) for flipped in (image, image[:, ::-1]) for turns in range(4)]


@pytest.mark.parametrize("one_resampling", [False, True])
def test_at_strength_0_only_the_right_angle_views_remain_and_at_1_nothing_changes(one_resampling):
    augmentation = {"rotation_range": 180, "zoom_range": 0.15, "width_shift_range": 0.1, "horizontal_flip": True,
                    "vertical_flip": True, "rotate90": True, "brightness": 0.2, "erasing": 0.5,
                    "fill_mode": "reflect", "one_resampling": one_resampling}
    images = np.random.default_rng(0).uniform(0, 255, (16, 24, 24, 3)).astype(np.float32)
    strength = tf.Variable(1.0, trainable=False)
    batches = tf.data.Dataset.from_tensors(images).repeat(2).map(inputs.make_augmenter(augmentation, 5, strength))
    unweakened = keras.ops.convert_to_numpy(inputs.make_augmenter(augmentation, seed=5)(images))
    np.testing.assert_array_equal(next(iter(batches)).numpy(), unweakened)  # the same draws, bit for bit
    strength.assign(0.0)
    plain = next(iter(batches)).numpy()
    for image, augmented in zip(images, plain):
        assert min(np.abs(augmented - view).max() for view in right_angle_views(image)) < 1e-3
    assert len({augmented.tobytes() for augmented in plain}) == len(plain)
    assert sum(np.array_equal(augmented, image) for image, augmented in zip(images, plain)) < 8  # flipped too
    strength.assign(1.0)  # read at each batch: the next one is fully augmented again
    again = next(iter(batches)).numpy()
    assert min(min(np.abs(augmented - view).max() for view in right_angle_views(image))
               for image, augmented in zip(images, again)) > 10


def test_mixup_blends_nothing_at_strength_0():
    images = np.random.default_rng(1).uniform(0, 255, (8, 8, 8, 3)).astype(np.float32)
    targets = np.eye(2, dtype=np.float32)[np.arange(8) % 2]
    strength = tf.Variable(0.0, trainable=False)
    mix = inputs.make_mixup(0.4, seed=2, strength=strength)
    unmixed = mix(images, targets)
    np.testing.assert_array_equal(unmixed[0], images)
    np.testing.assert_array_equal(unmixed[1], targets)
    strength.assign(1.0)
    assert not np.allclose(mix(images, targets)[1], targets)


def test_augmenter_changes_images_within_pixel_range_and_none_means_off():
    assert inputs.make_augmenter(None) is None
    assert inputs.make_augmenter({"horizontal_flip": False, "fill_mode": "nearest"}) is None
    augment = inputs.make_augmenter({"rotation_range": 90, "horizontal_flip": True, "brightness": 0.3}, seed=1)
    images = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    augmented = keras.ops.convert_to_numpy(augment(images))
    assert augmented.shape == images.shape and 0 <= augmented.min() and augmented.max() <= 255
    assert not np.allclose(augmented, images)
    with pytest.raises(ValueError, match="rotation"):
        inputs.make_augmenter({"rotation": 10})


def test_erasing_replaces_one_rectangle_in_the_asked_share_of_images():
    images = np.full((400, 20, 20, 3), 128.0, np.float32)
    erased = keras.ops.convert_to_numpy(inputs.make_augmenter({"erasing": 0.5}, seed=0)(images))
    changed = (erased != 128.0).any(axis=-1)
    hit = changed.any(axis=(1, 2))
    assert 0.4 < hit.mean() < 0.6
    assert 0 <= erased.min() and erased.max() <= 255
    for mask in changed[hit][:20]:
        rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = mask[rows.min():rows.max() + 1, columns.min():columns.max() + 1]
        assert box.mean() > 0.9  # one filled rectangle (noise may by chance keep a few pixels at 128)
        assert box.size <= 0.4 * mask.size


def test_mixup_blends_each_image_and_its_label_by_the_same_share_and_zero_means_off():
    assert inputs.make_mixup(0.0) is None
    # an image of class c is the constant 100 * c, so a blend's pixels must equal its label weights . class values
    classes = np.arange(16) % 4
    images = np.broadcast_to((100.0 * classes)[:, None, None, None], (16, 8, 8, 3)).astype("float32")
    targets = np.eye(4, dtype="float32")[classes]
    mixed_images, mixed_targets = map(keras.ops.convert_to_numpy, inputs.make_mixup(0.4, seed=3)(images, targets))
    np.testing.assert_allclose(mixed_targets.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(mixed_images[:, 0, 0, 0], mixed_targets @ (100.0 * np.arange(4)), rtol=1e-4, atol=1e-3)
    assert np.all(mixed_images.std(axis=(1, 2, 3)) < 1e-3)  # whole images blended, not patches
    assert ((mixed_targets > 0.01) & (mixed_targets < 0.99)).any(axis=1).sum() >= 4


def test_shuffled_training_batches_carry_mixup_blended_labels(run_folder):
    paths, labels, classes = train_split(run_folder)
    images, targets = next(iter(inputs.image_dataset(paths, labels, len(classes), 32, batch_size=8, shuffle=True,
                                                     mix=inputs.make_mixup(1.0, seed=0))))
    assert images.shape == (8, 32, 32, 3)
    assert ((targets > 0) & (targets < 1)).numpy().any()


def test_every_augmentation_parameter_is_understood_by_the_augmenter():
    keys = {field for field in params.AugmentationParams.__dataclass_fields__}
    assert keys == set(inputs.AUGMENTATION_KEYS)


def test_class_weights_balanced_explicit_and_unknown_class():
    labels = np.array([0, 0, 0, 1, 2, 2])
    classes = ["a", "b", "c"]
    assert inputs.class_weights(None, labels, classes) is None
    balanced = inputs.class_weights("balanced", labels, classes)
    assert balanced == pytest.approx({0: 6 / 9, 1: 2.0, 2: 1.0})
    assert inputs.class_weights({"b": 3}, labels, classes) == {0: 1.0, 1: 3.0, 2: 1.0}
    with pytest.raises(TrainingError, match="unknown classes \\['mel'\\].*a, b, c"):
        inputs.class_weights({"mel": 3}, labels, classes)


def test_feature_cache_key_names_backbone_weights_size_pooling_colour_constancy_and_precision(tmp_path):
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"1234")
    model = params.ModelParams(backbone="mobilenet", alpha=0.75, weights=str(weights), pooling="max")
    assert inputs.feature_cache_key(model, 224, 1, "float32") == "mobilenet-alpha0.75-w-4-224px-max-float32"
    random = params.ModelParams(backbone="vgg19", weights=None)
    assert inputs.feature_cache_key(random, 64, 3, "mixed_bfloat16") == \
        "vgg19-alpha1.0-random-seed3-64px-avg-mixed_bfloat16"
    corrected = params.ModelParams(backbone="vgg19", weights=None, colour_constancy="shades_of_gray")
    assert inputs.feature_cache_key(corrected, 64, 3, "float32") == \
        "vgg19-alpha1.0-random-seed3-64px-avg-shades_of_gray-float32"


def test_cached_features_are_computed_once_and_recomputed_when_the_images_change(run_folder, tmp_path):
    paths, _, _ = train_split(run_folder)
    calls = []

    class Extractor:
        def predict(self, dataset, verbose=None):
            batches = [images.numpy().mean(axis=(1, 2)) for images in dataset]
            calls.append(len(batches))
            return np.concatenate(batches)

    first = inputs.cached_features(Extractor(), tmp_path / "cache", "train", paths, 32)
    again = inputs.cached_features(Extractor(), tmp_path / "cache", "train", paths, 32)
    assert len(calls) == 1 and first.shape == (len(paths), 3)
    np.testing.assert_array_equal(first, again)
    inputs.cached_features(Extractor(), tmp_path / "cache", "train", paths[:-1], 32)
    assert len(calls) == 2
