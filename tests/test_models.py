"""Specification of lib.models: every backbone and head builds at small sizes with weights null,
preprocessing lives inside the model, saved models reload with plain keras.models.load_model."""

import keras
import numpy as np
import pytest

from lib import models, registry
from lib.errors import TrainingError


def raw_images(count=2, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype("float32")


@pytest.mark.parametrize("backbone, options", [
    ("small_cnn", {}),
    ("mobilenet", {"alpha": 0.25}),
    pytest.param("mobilenet_v2", {"alpha": 0.35}, marks=pytest.mark.slow),
    ("vgg19", {"head": "dense", "pooling": "max", "dense_units": [8, 8]}),
    pytest.param("efficientnet_b0", {"output_activation": "sigmoid"}, marks=pytest.mark.slow),
])
def test_each_backbone_builds_and_reloads_from_keras_file(backbone, options, tmp_path):
    model = models.build_model(backbone, num_classes=3, image_size=32, weights=None, trainable_layers=0,
                               **options)
    assert model.input.shape == (None, 32, 32, 3)
    assert [layer.name for layer in model.layers[:4]] == ["image", "preprocess", "backbone", "pool"]
    assert model.layers[-1].name == "predictions"
    probabilities = model.predict(raw_images(), verbose=0)
    assert probabilities.shape == (2, 3)
    if options.get("output_activation") != "sigmoid":
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded.predict(raw_images(), verbose=0), probabilities, atol=1e-6)
    every_layer = reloaded.layers + reloaded.get_layer("backbone").layers
    assert not any(type(layer).__name__.startswith("Random") for layer in every_layer)


def test_recipe_b_dense_head_has_three_512_unit_layers_with_dropout():
    model = models.build_model("small_cnn", num_classes=2, image_size=32, head="dense", pooling="max",
                               dropout=0.3)
    dense = [layer for layer in models.head_layers(model) if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [512, 512, 512, 2]
    assert [layer.rate for layer in models.head_layers(model) if isinstance(layer, keras.layers.Dropout)] == [0.3] * 3
    assert isinstance(model.get_layer("pool"), keras.layers.GlobalMaxPooling2D)


def test_vgg_preprocessing_is_caffe_mode_inside_the_model():
    pixels = raw_images(size=8)
    model = models.build_model("vgg19", num_classes=2, image_size=32, weights=None)
    expected = keras.applications.vgg19.preprocess_input(pixels.copy())
    np.testing.assert_allclose(model.get_layer("preprocess")(pixels), expected, atol=1e-4)


def test_mobilenet_preprocessing_maps_pixels_to_minus_one_one():
    model = models.build_model("mobilenet", num_classes=2, image_size=32, alpha=0.25)
    pixels = raw_images(size=8)
    expected = keras.applications.mobilenet.preprocess_input(pixels.copy())
    np.testing.assert_allclose(model.get_layer("preprocess")(pixels), expected, atol=1e-5)


def test_trainable_layers_freezes_all_but_the_last_n_backbone_layers():
    model = models.build_model("mobilenet", num_classes=2, image_size=32, alpha=0.25, trainable_layers=5,
                               freeze_batch_norm=False)
    backbone_layers = model.get_layer("backbone").layers
    assert [layer.trainable for layer in backbone_layers[-5:]] == [True] * 5
    assert not any(layer.trainable for layer in backbone_layers[:-5])
    frozen = models.build_model("mobilenet", num_classes=2, image_size=32, alpha=0.25, trainable_layers=0)
    assert frozen.get_layer("backbone").trainable_weights == []
    assert frozen.get_layer("predictions").trainable


@pytest.mark.parametrize("trainable_layers, freeze_batch_norm", [(0, False), (-1, True), (5, True)])
def test_frozen_batch_norm_runs_in_inference_mode(trainable_layers, freeze_batch_norm):
    model = models.build_model("mobilenet", num_classes=2, image_size=32, alpha=0.25, dropout=0.0,
                               trainable_layers=trainable_layers, freeze_batch_norm=freeze_batch_norm)
    batch_norms = [layer for layer in model.get_layer("backbone").layers
                   if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and not any(layer.trainable for layer in batch_norms)
    images = raw_images(count=4)
    np.testing.assert_allclose(model(images, training=True), model(images, training=False), atol=1e-5)


def test_trainable_batch_norm_uses_batch_statistics_in_training():
    """The counterpart that shows the test above can fail: unfrozen, BatchNormalization normalises with the
    statistics of the batch in training, so the outputs differ from inference."""
    model = models.build_model("mobilenet", num_classes=2, image_size=32, alpha=0.25, dropout=0.0,
                               trainable_layers=-1, freeze_batch_norm=False)
    images = raw_images(count=4)
    assert np.abs(np.asarray(model(images, training=True)) - np.asarray(model(images, training=False))).max() > 1e-3


def test_affine_batch_norm_trains_scale_and_offset_on_frozen_statistics(tmp_path):
    model = models.build_model("mobilenet", num_classes=2, image_size=32, alpha=0.25, dropout=0.0,
                               batch_norm_affine=True)
    batch_norms = [layer for layer in model.get_layer("backbone").layers
                   if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and all(isinstance(layer, models.StatisticsFrozenBatchNormalization) and layer.trainable
                               for layer in batch_norms)
    images = raw_images(count=4)
    np.testing.assert_allclose(model(images, training=True), model(images, training=False), atol=1e-5)
    statistics = [np.array(layer.moving_mean) for layer in batch_norms]
    affine = [np.array(weight) for layer in batch_norms for weight in (layer.gamma, layer.beta)]
    assert {weight.path for weight in model.trainable_weights} >= {weight.path for layer in batch_norms
                                                                   for weight in (layer.gamma, layer.beta)}
    model.compile(keras.optimizers.SGD(0.1), "categorical_crossentropy")
    model.fit(images, keras.utils.to_categorical([0, 1, 0, 1], 2), epochs=2, verbose=0)
    assert all(np.array_equal(layer.moving_mean, before) for layer, before in zip(batch_norms, statistics))
    after = [np.array(weight) for layer in batch_norms for weight in (layer.gamma, layer.beta)]
    assert any(not np.array_equal(now, before) for now, before in zip(after, affine))
    model.save(tmp_path / "model.keras")  # a resumed run keeps the layer, so its statistics stay frozen
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(reloaded.get_layer("backbone").get_layer("conv1_bn"), models.StatisticsFrozenBatchNormalization)
    np.testing.assert_allclose(reloaded(images, training=True), model(images, training=False), atol=1e-5)


def test_affine_batch_norm_draws_the_same_initial_weights_as_the_recipe():
    """The option changes what trains, not the run's random numbers: a paired comparison starts from the same
    head (rebuilding the backbone would draw its initial weights again and shift every later draw)."""
    built = {}
    for affine in (False, True):
        keras.utils.set_random_seed(0)
        built[affine] = models.build_model("mobilenet", num_classes=2, image_size=32, alpha=0.25, weights=None,
                                           batch_norm_affine=affine)
    for plain, affine in zip(built[False].weights, built[True].weights, strict=True):
        np.testing.assert_array_equal(plain, affine, err_msg=plain.path)


def test_layer_rate_scales_decay_from_the_head_down_through_the_weighted_backbone_layers():
    model = models.build_model("small_cnn", 3, 32, alpha=0.25)  # conv0-conv3, each with a kernel and a bias
    scales = models.layer_rate_scales(model, 0.5)
    assert scales == {f"conv{block}/{weight}": 0.5 ** (4 - block)
                      for block in range(4) for weight in ("kernel", "bias")}
    models.set_trainable_layers(model, 2)  # frozen layers have nothing to scale
    assert set(models.layer_rate_scales(model, 0.5)) == {"conv3/kernel", "conv3/bias"}
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        models.layer_rate_scales(model, 0.0)


def test_gradcam_parts_recompose_the_model():
    model = models.build_model("small_cnn", num_classes=3, image_size=32)
    conv_model, classifier = models.gradcam_parts(model)
    activations = conv_model(raw_images())
    assert activations.shape == (2, 4, 4, 128)
    np.testing.assert_allclose(classifier(activations), model(raw_images()), atol=1e-6)


def lit_by(cast, size=16, seed=0):
    """A grey texture under a coloured light: the same values in every channel, times `cast` per channel."""
    grey = np.random.default_rng(seed).uniform(20, 200, (1, size, size, 1)).astype("float32")
    return grey * np.asarray(cast, "float32")


def test_shades_of_gray_removes_a_colour_cast_and_keeps_grey_images():
    correct = models.ShadesOfGray()
    neutral = lit_by((1.0, 1.0, 1.0))
    np.testing.assert_allclose(correct(neutral), neutral, rtol=1e-5)
    corrected = np.asarray(correct(lit_by((1.2, 0.9, 0.7))))
    np.testing.assert_allclose(corrected[..., 0], corrected[..., 1], rtol=1e-4)
    np.testing.assert_allclose(corrected[..., 1], corrected[..., 2], rtol=1e-4)
    np.testing.assert_allclose(corrected, neutral * (1.2 + 0.9 + 0.7) / 3, rtol=1e-4)
    assert np.asarray(correct(lit_by((1.0, 1.0, 40.0)))).max() <= 255.0


def test_a_model_with_colour_constancy_predicts_the_same_under_a_colour_cast(tmp_path):
    model = models.build_model("small_cnn", num_classes=3, image_size=32, colour_constancy="shades_of_gray")
    assert [layer.name for layer in model.layers[:5]] == ["image", "colour_constancy", "preprocess", "backbone",
                                                          "pool"]
    neutral, cast = lit_by((1.0, 1.0, 1.0), size=32), lit_by((1.15, 1.0, 0.85), size=32)
    np.testing.assert_allclose(model.predict(cast, verbose=0), model.predict(neutral, verbose=0), atol=1e-5)
    plain = models.build_model("small_cnn", num_classes=3, image_size=32)
    plain.set_weights(model.get_weights())
    assert np.abs(plain.predict(cast, verbose=0) - plain.predict(neutral, verbose=0)).max() > 1e-4
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded.predict(cast, verbose=0), model.predict(cast, verbose=0), atol=1e-6)


def test_colour_constancy_computes_in_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = models.build_model("small_cnn", num_classes=2, image_size=16, colour_constancy="shades_of_gray")
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.get_layer("colour_constancy").dtype_policy.name == "float32"
    assert models.as_float32(model).get_layer("colour_constancy").dtype_policy.name == "float32"


def test_generalized_mean_pooling_lies_between_the_average_and_the_max():
    maps = np.random.default_rng(0).uniform(0, 6, (2, 7, 7, 4)).astype("float32")
    np.testing.assert_allclose(models.GeneralizedMeanPooling(power=1.0)(maps), maps.mean(axis=(1, 2)), rtol=1e-5)
    gem = np.asarray(models.GeneralizedMeanPooling(power=3.0)(maps))
    assert np.all(gem > maps.mean(axis=(1, 2))) and np.all(gem < maps.max(axis=(1, 2)))
    np.testing.assert_allclose(models.GeneralizedMeanPooling(power=200.0)(maps), maps.max(axis=(1, 2)), rtol=0.03)


def test_a_gem_model_learns_its_power_and_reloads(tmp_path):
    model = models.build_model("small_cnn", num_classes=2, image_size=16, pooling="gem")
    pool = model.get_layer("pool")
    assert isinstance(pool, models.GeneralizedMeanPooling) and pool.dtype_policy.name == "float32"
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
    model.fit(raw_images(8, 16), np.eye(2, dtype="float32")[[0, 1] * 4], epochs=2, verbose=0)
    assert float(pool.power.numpy()) != 3.0
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(reloaded.predict(raw_images(3, 16), verbose=0), model.predict(raw_images(3, 16),
                                                                                            verbose=0), atol=1e-6)
    assert float(reloaded.get_layer("pool").power.numpy()) == float(pool.power.numpy())


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ValueError, match="unknown backbone 'mobilenetv1'; choose one of: mobilenet, "):
        models.build_model("mobilenetv1", num_classes=2, image_size=32)


def test_missing_weights_file_is_a_training_error(tmp_path):
    with pytest.raises(TrainingError, match="no weights file at .*nothere.h5"):
        models.build_model("mobilenet", num_classes=2, image_size=32, weights=str(tmp_path / "nothere.h5"))


def test_failed_imagenet_download_explains_the_local_file_fix(monkeypatch):
    def offline(*args, **kwargs):  # what Keras raises when storage.googleapis.com is unreachable
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: Name or service not known")
    monkeypatch.setitem(models.BACKBONES, "vgg19", offline)
    with pytest.raises(TrainingError, match="offline.*model.weights: <path"):
        models.build_model("vgg19", num_classes=2, image_size=32, weights="imagenet")


def test_a_mixed_precision_model_has_a_float32_twin_with_the_same_weights():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = models.build_model("small_cnn", num_classes=3, image_size=32)
    finally:
        keras.config.set_dtype_policy("float32")
    twin = models.as_float32(mixed)
    assert {layer.dtype_policy.name for layer in twin.get_layer("backbone").layers} == {"float32"}
    for mixed_weight, twin_weight in zip(mixed.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(mixed_weight, twin_weight)
    np.testing.assert_allclose(twin.predict(raw_images(), verbose=0), mixed.predict(raw_images(), verbose=0),
                               atol=5e-3)
    plain = models.build_model("small_cnn", num_classes=3, image_size=32)
    assert models.as_float32(plain) is plain


def test_every_registered_backbone_has_a_builder_and_a_preprocessing():
    assert set(models.BACKBONES) == set(registry.BACKBONES)
    assert {spec.preprocess for spec in registry.BACKBONES.values()} <= set(models.PREPROCESSING)
    assert set(models.POOLING) == set(registry.POOLINGS)
    assert set(models.COLOUR_CONSTANCY) == set(registry.COLOUR_CONSTANCIES)


def test_backbone_weights_load_from_a_local_file(tmp_path):
    trained = models.build_model("small_cnn", num_classes=2, image_size=32)
    path = tmp_path / "backbone.weights.h5"
    trained.get_layer("backbone").save_weights(path)
    features = models.feature_model(trained).predict(raw_images(), verbose=0)
    rebuilt = models.build_model("small_cnn", num_classes=2, image_size=32, weights=str(path))
    np.testing.assert_allclose(models.feature_model(rebuilt).predict(raw_images(), verbose=0), features, atol=1e-6)
