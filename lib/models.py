"""Classifiers: a backbone from `keras.applications` (or a small CNN) with its preprocessing inside
the model and a configurable head.

Every model built here has the same structure, which evaluation (Grad-CAM), the feature cache and
the TF.js export rely on:

    image (None, S, S, 3) float RGB in [0, 255]
      -> optional "colour_constancy" layer (Shades of Gray: each image's colour cast removed)
      -> "preprocess" layer (the backbone's own preprocess_input, serializable, no Lambda)
      -> "backbone" (a nested functional model: conv feature maps, (None, h, w, c))
      -> "pool" (GlobalAveragePooling2D, GlobalMaxPooling2D or GeneralizedMeanPooling, (None, c))
      -> head: [Dense "dense_i" + Dropout "dropout_i"] per hidden layer, Dropout "dropout",
         Dense "predictions" (float32 probabilities, order of classes.json)

No random augmentation layer is ever part of the model (it would run at inference in TF.js).
"""

import logging
from pathlib import Path

import keras
from keras import layers

from lib import registry
from lib.errors import TrainingError

log = logging.getLogger(__name__)

# ImageNet channel means in BGR order, as `keras.applications.imagenet_utils` 'caffe' mode uses them
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="lib.models")
class CaffePreprocess(layers.Layer):
    """VGG-style `preprocess_input` ('caffe' mode): RGB [0, 255] -> BGR with the ImageNet mean subtracted."""

    def call(self, inputs):
        bgr = inputs[..., ::-1]
        return bgr - keras.ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=bgr.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="lib.models")
class StatisticsFrozenBatchNormalization(layers.BatchNormalization):
    """BatchNormalization that always normalises with its moving statistics (the backbone's ImageNet ones) and
    never updates them, in training too, while its scale and offset stay trainable (`model.batch_norm_affine`):
    each channel of the pretrained features can be re-scaled for dermoscopy without the noise of batch
    statistics. A plain BatchNormalization ties the two: frozen, neither moves; trainable, both do."""

    def call(self, inputs, training=None, mask=None):
        return super().call(inputs, training=False, mask=mask)


@keras.saving.register_keras_serializable(package="lib.models")
class ShadesOfGray(layers.Layer):
    """Colour constancy by Shades of Gray (Finlayson & Trezzi 2004), as dermoscopy uses it across cameras
    (Barata et al. 2015; the ISIC 2019 winners): each image's illuminant is the Minkowski `power`-mean of each
    channel, and the channels are rescaled so that illuminant becomes grey of the same mean, clipped to
    [0, 255]. Part of the model, so training, evaluation and the web page all see the same correction."""

    def __init__(self, power=6, **kwargs):
        kwargs.setdefault("dtype", "float32")  # x ** 6 underflows in float16
        super().__init__(**kwargs)
        self.power = power

    def call(self, inputs):
        ops = keras.ops
        unit = ops.clip(ops.cast(inputs, "float32") / 255.0, 0.0, 1.0)
        illuminant = ops.power(ops.mean(ops.power(unit, self.power), axis=(1, 2), keepdims=True), 1.0 / self.power)
        grey = ops.mean(illuminant, axis=-1, keepdims=True)
        return ops.clip(unit * grey / ops.maximum(illuminant, 1e-6), 0.0, 1.0) * 255.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "power": self.power}


@keras.saving.register_keras_serializable(package="lib.models")
class GeneralizedMeanPooling(layers.Layer):
    """GeM pooling (Radenovic et al. 2018): each channel's `power`-mean over the feature map, (None, h, w, c) ->
    (None, c); power 1 is average pooling and a large power approaches max pooling, so the strongest responses
    (a lesion's, in part of the image) weigh more than the background's. The power is learned with the backbone
    (not in a head phase on cached features, which are pooled at the initial power)."""

    def __init__(self, power=3.0, **kwargs):
        kwargs.setdefault("dtype", "float32")  # x ** p of small activations underflows in float16
        super().__init__(**kwargs)
        self.initial_power = power

    def build(self, input_shape):
        self.power = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.initial_power),
                                     name="power")

    def call(self, inputs):
        ops = keras.ops
        power = ops.maximum(self.power, 1.0)  # below 1 it is no longer between the mean and the max
        clipped = ops.maximum(ops.cast(inputs, "float32"), 1e-6)  # a negative base has no real power
        peak = ops.max(clipped, axis=(1, 2), keepdims=True)  # scaled to at most 1, x ** p cannot overflow
        mean = ops.mean(ops.power(clipped / peak, power), axis=(1, 2))
        return ops.squeeze(peak, axis=(1, 2)) * ops.power(mean, 1.0 / power)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "power": self.initial_power}


COLOUR_CONSTANCY = {"none": None, "shades_of_gray": lambda: ShadesOfGray(name="colour_constancy")}


def small_cnn(input_shape, weights=None, alpha=1.0, name="small_cnn"):
    """A small from-scratch conv net for the demo and tests: four conv blocks, widths 32*alpha.. 128*alpha."""
    if weights == "imagenet":
        raise TrainingError("small_cnn has no ImageNet weights; use model.weights: null or a weights file")
    inputs = keras.Input(input_shape)
    x = inputs
    for block, width in enumerate((32, 64, 96, 128)):
        # no BatchNormalization: on small, mostly-background images its moving statistics lag the
        # batch statistics enough to make validation predictions collapse onto one class for many epochs
        x = layers.Conv2D(max(8, int(width * alpha)), 3, padding="same", activation="relu",
                          kernel_initializer="he_normal", name=f"conv{block}")(x)
        if block < 3:
            x = layers.MaxPooling2D(name=f"pool{block}")(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        model.load_weights(weights)
    return model


def _application(name):
    def build(input_shape, weights, alpha, name_in_model):
        spec = registry.BACKBONES[name]
        extra = {"alpha": alpha} if spec.takes_alpha else {}
        constructor = getattr(keras.applications, spec.application)
        return constructor(include_top=False, weights=weights, input_shape=input_shape, name=name_in_model, **extra)
    return build


# name -> (input_shape, weights, alpha, name) -> keras.Model producing conv feature maps
BACKBONES = {name: small_cnn if spec.application == "small_cnn" else _application(name)
             for name, spec in registry.BACKBONES.items()}

PREPROCESSING = {
    "tf": lambda: layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess"),  # [-1, 1]
    "caffe": lambda: CaffePreprocess(name="preprocess"),
    "unit": lambda: layers.Rescaling(1 / 255.0, name="preprocess"),  # [0, 1]
    "none": lambda: layers.Identity(name="preprocess"),
}

POOLING = {"avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D, "gem": GeneralizedMeanPooling}
RECIPE_B_DENSE_UNITS = (512, 512, 512)


def _choose(choices, name, what):
    if name not in choices:
        raise ValueError(f"unknown {what} {name!r}; choose one of: {', '.join(choices)}")
    return choices[name] if isinstance(choices, dict) else name


def build_backbone(backbone, image_size, weights=None, alpha=1.0, batch_norm_affine=False):
    """The backbone alone, named "backbone": (None, S, S, 3) preprocessed input -> conv feature maps.

    `weights`: "imagenet" (downloaded by Keras), None (random init) or the path of a weights file.
    `batch_norm_affine`: its BatchNormalization layers as StatisticsFrozenBatchNormalization.
    """
    build = _choose(BACKBONES, backbone, "backbone")
    if weights not in (None, "imagenet"):
        path = Path(str(weights))
        if not path.is_file():
            raise TrainingError(f"no weights file at {weights!r} (model.weights); use imagenet, null or the "
                                f"path of an existing .h5 weights file")
        weights = str(path)
    try:
        # built under its final name: re-wrapping it in another keras.Model breaks MirroredStrategy replicas
        built = build((image_size, image_size, 3), weights, alpha, "backbone")
    except ValueError:
        raise
    except Exception as error:  # Keras reports a failed download as a bare Exception("URL fetch failure ...")
        if weights == "imagenet":
            raise TrainingError(
                f"cannot download the ImageNet weights of {backbone} (offline?): {error}. Download the "
                f"'no_top' .h5 file elsewhere and set model.weights: <path to it>, or use model.weights: null"
            ) from error
        raise TrainingError(f"cannot build backbone {backbone} with weights {weights!r}: {error}") from error
    return with_statistics_frozen_batch_norm(built) if batch_norm_affine else built


def with_statistics_frozen_batch_norm(backbone):
    """`backbone` with its BatchNormalization layers turned into StatisticsFrozenBatchNormalization in place (the
    subclass adds no state): no layer is rebuilt, so no variable is initialised again and a run draws the same random
    numbers as with plain BatchNorm (its head phase repeats the recipe's to the digit)."""
    for layer in backbone.layers:
        if type(layer) is layers.BatchNormalization:
            layer.__class__ = StatisticsFrozenBatchNormalization
    return backbone


def set_trainable_layers(model, trainable_layers, freeze_batch_norm=True):
    """Freeze the backbone of `model` except its last `trainable_layers` layers (-1: all trainable,
    0: all frozen). With `freeze_batch_norm`, every BatchNormalization layer of the backbone stays frozen,
    which in Keras 3 also runs it in inference mode: fine-tuning with small batches then keeps the
    ImageNet statistics instead of noisy batch ones; a StatisticsFrozenBatchNormalization keeps them anyway, so
    it follows the other layers and its scale and offset train. Recompile afterwards."""
    if trainable_layers < -1:
        raise ValueError(f"trainable_layers must be -1 (all), 0 (frozen) or N > 0; got {trainable_layers}")
    backbone = model.get_layer("backbone")
    backbone.trainable = trainable_layers != 0
    if trainable_layers > 0:
        for layer in backbone.layers[:-trainable_layers]:
            layer.trainable = False
    if freeze_batch_norm:
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization) and \
                    not isinstance(layer, StatisticsFrozenBatchNormalization):
                layer.trainable = False
    return model


def layer_rate_scales(model, decay):
    """Layer-wise learning-rate decay (Howard & Ruder 2018; Clark et al. 2020): each trainable variable's share of
    the learning rate, keyed by `variable.path`. The head learns at the full rate and every weighted backbone layer
    (one with a kernel) at `decay` times the rate of the weighted layer above it, so the early, generic filters move
    least; a BatchNormalization layer, if trainable, shares the rate of the layer above it. Variables outside the
    backbone are left out (their share is 1)."""
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"layer decay must be in (0, 1]; got {decay}")
    scales, depth = {}, 0
    for layer in reversed(model.get_layer("backbone").layers):
        if hasattr(layer, "kernel"):
            depth += 1
        for variable in layer.trainable_weights:
            scales[variable.path] = decay ** depth
    return scales


def build_model(backbone, num_classes, image_size, alpha=1.0, weights=None, head="pooled", pooling="avg",
                dense_units=(), dropout=0.25, trainable_layers=-1, output_activation="softmax",
                freeze_batch_norm=True, colour_constancy="none", batch_norm_affine=False):
    """Build the full classifier (structure in the module docstring) under Keras' current dtype policy.

    head "pooled" (recipe A): pool, Dropout(dropout), Dense(num_classes).
    head "dense" (recipe B): pool, then Dense(u, relu) + Dropout(dropout) for each u in `dense_units`
    (empty: [512, 512, 512]), then Dense(num_classes).
    `output_activation`: softmax | sigmoid. `trainable_layers`, `freeze_batch_norm`: see set_trainable_layers;
    `batch_norm_affine`: see build_backbone.
    `colour_constancy`: none | shades_of_gray (ShadesOfGray before the backbone's preprocessing).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2; got {num_classes}")
    _choose(registry.HEADS, head, "head")
    _choose(registry.OUTPUT_ACTIVATIONS, output_activation, "output_activation")
    if head == "pooled" and dense_units:
        raise ValueError("dense_units is used by head: dense only; remove it or set head: dense")
    pool_layer = _choose(POOLING, pooling, "pooling")
    _choose(BACKBONES, backbone, "backbone")
    colour_layer = _choose(COLOUR_CONSTANCY, colour_constancy, "colour_constancy")

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = colour_layer()(inputs) if colour_layer else inputs
    x = PREPROCESSING[registry.BACKBONES[backbone].preprocess]()(x)
    x = build_backbone(backbone, image_size, weights=weights, alpha=alpha, batch_norm_affine=batch_norm_affine)(x)
    x = pool_layer(name="pool")(x)
    hidden = (list(dense_units) or list(RECIPE_B_DENSE_UNITS)) if head == "dense" else []
    for index, units in enumerate(hidden):
        x = layers.Dense(units, activation="relu", name=f"dense_{index}")(x)
        x = layers.Dropout(dropout, name=f"dropout_{index}")(x)
    if not hidden:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation=output_activation, dtype="float32", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=f"{backbone}_{head}")
    set_trainable_layers(model, trainable_layers, freeze_batch_norm)
    log.info("built %s: %d parameters, backbone %s, dtype policy %s", model.name, model.count_params(),
             "trainable" if trainable_layers == -1 else f"trainable_layers={trainable_layers}",
             keras.config.dtype_policy().name)
    return model


def as_float32(model):
    """`model` itself when it computes in float32, else a float32 copy with the same weights: a model trained
    under mixed precision (float16/bfloat16 compute) exported or evaluated as the float32 graph TF.js runs."""
    if all(layer.dtype_policy.name == "float32" for layer in _all_layers(model)):
        return model
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        config = _with_float32_policies(model.get_config())
        copy = model.__class__.from_config(config)
    finally:
        keras.config.set_dtype_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def compute_pointwise_in_bfloat16(model):
    """Set every plain convolution (Conv2D) of `model`'s backbone to compute in bfloat16 (mixed_bfloat16: float32
    weights), leaving depthwise convolutions, normalisation and the head in float32: on CPUs with bfloat16
    instructions the dense matrix products gain and oneDNN's depthwise kernels lose (benchmarks/precision.py).
    Keras casts between the two at each layer's input; the policies are saved with the model."""
    for layer in model.get_layer("backbone").layers:
        if isinstance(layer, layers.Conv2D):
            layer.dtype_policy = "mixed_bfloat16"
    return model


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _with_float32_policies(config):
    """A copy of a Keras config with every layer's dtype policy replaced by float32."""
    def float32(entry):
        if entry.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            return {**entry, "config": {**entry.get("config", {}), "name": "float32"}}
        return None
    return _rewrite_config(config, float32)


def at_image_size(model, image_size):
    """A copy of `model` (same layers, same weights, its own variables) that takes (None, image_size, image_size, 3)
    images: for training on downscaled images (train.low_resolution), whose weights are copied back afterwards."""
    old_size = model.input.shape[1]

    def resized(entry):
        if entry.get("class_name") != "InputLayer":
            return None
        shape = list(entry["config"]["batch_shape"])
        if shape[1:3] == [old_size, old_size]:
            shape[1:3] = [image_size, image_size]
        return {**entry, "config": {**entry["config"], "batch_shape": shape}}
    copy = model.__class__.from_config(_rewrite_config(model.get_config(), resized))
    copy.set_weights(model.get_weights())
    return copy


def _rewrite_config(config, rewrite):
    """A copy of a Keras config (nested dicts and lists) in which every dict that `rewrite` returns a replacement
    for (not None) is replaced, and every other one is copied with its values rewritten the same way."""
    if isinstance(config, dict):
        replacement = rewrite(config)
        if replacement is not None:
            return replacement
        return {key: _rewrite_config(value, rewrite) for key, value in config.items()}
    if isinstance(config, list):
        return [_rewrite_config(item, rewrite) for item in config]
    return config


def head_layers(model):
    """The layers after "pool", in order (the head that the feature cache trains)."""
    names = [layer.name for layer in model.layers]
    return model.layers[names.index("pool") + 1:]


def _apply(layer_list, tensor):
    for layer in layer_list:
        tensor = layer(tensor)
    return tensor


def head_model(model):
    """The head alone, sharing its layers (and weights) with `model`: pooled features (None, c) ->
    probabilities. Training it trains `model`'s head."""
    inputs = keras.Input(model.get_layer("pool").output.shape[1:], name="features")
    return keras.Model(inputs, _apply(head_layers(model), inputs), name="head")


def feature_model(model):
    """Raw image (None, S, S, 3) in [0, 255] -> pooled backbone features (None, c), sharing weights."""
    return keras.Model(model.input, model.get_layer("pool").output, name="features")


def gradcam_parts(model):
    """Split `model` for Grad-CAM: `conv_model` maps raw RGB [0, 255] (None, S, S, 3) to the backbone's
    last conv activations (None, h, w, c); `classifier` maps those activations to probabilities.
    Both share weights with `model`."""
    conv_output = model.get_layer("pool").input
    conv_model = keras.Model(model.input, conv_output, name="conv")
    inputs = keras.Input(conv_output.shape[1:], name="conv_features")
    classifier = keras.Model(inputs, _apply([model.get_layer("pool")] + head_layers(model), inputs),
                             name="classifier")
    return conv_model, classifier
