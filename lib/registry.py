"""The named choices behind the TensorFlow side of the pipeline (backbones, optimizers, losses, ...), as plain
data that imports without TensorFlow: `lib.params` validates a recipe against these in a second, and
`lib.models` / `lib.training` look their entries up here to build things. (The data side's registries,
`sources.SOURCES` and `images.RESIZE_MODES`, live in their own TensorFlow-free modules.)
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Backbone:
    application: str  # class name in keras.applications, or "small_cnn" (lib.models' own small net)
    preprocess: str  # key of PREPROCESSINGS: what the model does to raw RGB [0, 255] before the backbone
    takes_alpha: bool = False  # has a width multiplier (model.alpha)
    imagenet_alphas: tuple = ()  # widths with published ImageNet weights; empty: any width, or no width at all
    has_imagenet_weights: bool = True
    # bfloat16 measured faster than float32 on a CPU with bfloat16 instructions (benchmarks/precision.py): VGG19's
    # big dense convolutions gain, MobileNet's depthwise ones lose; unmeasured backbones stay float32
    cpu_bfloat16: bool = False


BACKBONES = {
    "mobilenet": Backbone("MobileNet", "tf", takes_alpha=True, imagenet_alphas=(0.25, 0.5, 0.75, 1.0)),
    "mobilenet_v2": Backbone("MobileNetV2", "tf", takes_alpha=True,
                             imagenet_alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4)),
    "vgg19": Backbone("VGG19", "caffe", cpu_bfloat16=True),
    # EfficientNet rescales and normalises inside keras.applications already: it takes [0, 255]
    "efficientnet_b0": Backbone("EfficientNetB0", "none"),
    "small_cnn": Backbone("small_cnn", "unit", takes_alpha=True, has_imagenet_weights=False),
}
# "tf": [-1, 1]; "caffe": BGR minus the ImageNet mean; "unit": [0, 1]; "none": as is
PREPROCESSINGS = ("tf", "caffe", "unit", "none")
POOLINGS = ("avg", "max", "gem")  # gem: generalized mean, its power learned in fine-tuning
COLOUR_CONSTANCIES = ("none", "shades_of_gray")  # shades_of_gray: each image's colour cast removed in the model
HEADS = ("pooled", "dense")
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid")

OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop"}  # keras.optimizers names
MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")  # the ones taking train.momentum; Adam keeps its own moving averages
LOSSES = ("crossentropy", "focal")  # categorical (or binary, for sigmoid outputs); keras' CategoricalFocalCrossentropy
# shuffle: the data's own class shares; the resamplings draw a class in proportion to count ** exponent: balanced
# in equal shares, sqrt in proportion to the square root of its count (Mahajan et al. 2018), between the two
SAMPLING_EXPONENTS = {"balanced": 0.0, "sqrt": 0.5}
SAMPLINGS = ("shuffle", *SAMPLING_EXPONENTS)
SCHEDULES = ("constant", "cosine")  # cosine: linear warm-up, then cosine decay to zero over the phase
FILL_MODES = ("nearest", "reflect", "wrap", "constant")
FEATURE_CACHE = ("auto", "on", "off")
MONITOR_MODES = ("auto", "min", "max")
STRATEGIES = ("auto", "default", "mirrored", "tpu", "multi_worker")
# mixed_bfloat16_pointwise: only the backbone's plain convolutions (MobileNet's 1x1 pointwise ones, a matrix product
# each) compute in bfloat16, its depthwise convolutions and everything else in float32
# (lib.models.compute_pointwise_in_bfloat16)
POINTWISE_BFLOAT16 = "mixed_bfloat16_pointwise"
PRECISIONS = ("auto", "off", "mixed_float16", "mixed_bfloat16", POINTWISE_BFLOAT16)
QUANTIZATIONS = ("none", "float16", "uint8")  # of the TF.js weights; how each is done: lib.export.QUANTIZATIONS
BROWSER_PARITY = ("auto", "on", "off")  # auto: measured in Chromium when it is installed
# test-time augmentation in evaluation: the image alone, its 4 flips, all 8 right-angle views, those and the 8 of the
# image turned by 45 degrees, or whichever of these scores the higher balanced accuracy on the validation split
TTA_MODES = ("off", "flips", "dihedral", "dihedral_45", "auto")
# per-class biases of the probabilities, fitted on validation for balanced accuracy: never, always, or where they
# raise it on held-out halves of the validation split
CLASS_BIAS_MODES = ("off", "on", "auto")
