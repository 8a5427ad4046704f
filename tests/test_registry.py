"""Specification of lib.registry: the single list of every named choice, read by params.py without TensorFlow and
looked up by the modules that build things."""

import dataclasses
import subprocess
import sys

from lib import images, params, paths, registry, sources


def choices_of(section):
    return {field.name: field.metadata["choices"] for field in dataclasses.fields(section)
            if field.metadata.get("choices")}


def test_every_choice_of_the_params_is_a_registry():
    assert choices_of(params.ModelParams) == {
        "backbone": tuple(registry.BACKBONES), "head": registry.HEADS, "pooling": registry.POOLINGS,
        "colour_constancy": registry.COLOUR_CONSTANCIES, "output_activation": registry.OUTPUT_ACTIVATIONS}
    train = choices_of(params.TrainParams)
    assert train["optimizer"] == tuple(registry.OPTIMIZERS) and train["loss"] == registry.LOSSES
    assert (train["sampling"], train["schedule"], train["strategy"]) == (registry.SAMPLINGS, registry.SCHEDULES,
                                                                         registry.STRATEGIES)
    assert choices_of(params.DataParams) == {"source": tuple(sources.SOURCES), "layout": sources.LAYOUTS,
                                             "labels": sources.LABEL_MODES, "resize_mode": tuple(images.RESIZE_MODES),
                                             "on_bad_image": images.ON_BAD_IMAGE}
    assert choices_of(params.ExportParams) == {"quantize": registry.QUANTIZATIONS,
                                               "browser_parity": registry.BROWSER_PARITY}


def test_params_read_the_registries_without_importing_tensorflow():
    probe = "import sys; from lib import params; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=paths.PROJECT_ROOT, capture_output=True, text=True)
    assert result.stdout.split() == ["False", "False"], result.stderr[-2000:]


def test_backbones_name_their_preprocessing_and_imagenet_widths():
    for name, spec in registry.BACKBONES.items():
        assert spec.preprocess in registry.PREPROCESSINGS, name
        assert not spec.imagenet_alphas or spec.takes_alpha, name
    assert 0.75 in registry.BACKBONES["mobilenet"].imagenet_alphas
    assert not registry.BACKBONES["small_cnn"].has_imagenet_weights
