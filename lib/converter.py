"""The tensorflowjs converter, imported and called without TensorFlow Decision Forests.

`tensorflowjs` 4.22 imports `tensorflow_decision_forests` unconditionally (converters/tf_saved_model_conversion_v2.py,
line 28), although only decision-forest models use it. TF-DF pins one exact TensorFlow, so on Colab installing it
would replace Colab's TensorFlow. `import_tensorflowjs` therefore lends the converter an empty module of that name
while it imports, when TF-DF is not installed, and takes it back afterwards, so that nothing else in the process
mistakes the placeholder for the real package.

`python -m lib.converter` converts a SavedModel to a TF.js graph model through the converter's Python API,
`convert_tf_saved_model`, with real arguments: the tensorflowjs_converter command (`converter.pip_main`) joins its
argv with spaces and splits it again, so it breaks on a path with a space.

    python -m lib.converter SAVED_MODEL_DIR OUTPUT_DIR [--signature_name serve] [--saved_model_tags serve]
        [--quantize_float16[=NAMES]] [--quantize_uint8[=NAMES]]

The quantization flags have tensorflowjs_converter's names and meaning: without a value the dtype applies to every
weight, with a comma-separated list of weight names (wildcards allowed) to those only.
"""

import argparse
import contextlib
import importlib
import sys
import types

DECISION_FORESTS = "tensorflow_decision_forests"
_ABSENT = object()


@contextlib.contextmanager
def _decision_forests_placeholder():
    """While active: an empty `tensorflow_decision_forests` module if the real one cannot be imported because it
    is not installed (a TF-DF that is installed but broken raises as usual). Then the previous state comes back."""
    try:
        importlib.import_module(DECISION_FORESTS)
    except ModuleNotFoundError as error:
        if error.name != DECISION_FORESTS:
            raise
    else:
        yield
        return
    previous = sys.modules.get(DECISION_FORESTS, _ABSENT)
    placeholder = types.ModuleType(DECISION_FORESTS, "Placeholder: only decision-forest models need the real package")
    sys.modules[DECISION_FORESTS] = placeholder
    try:
        yield
    finally:
        if previous is _ABSENT:
            sys.modules.pop(DECISION_FORESTS, None)
        else:
            sys.modules[DECISION_FORESTS] = previous


def import_tensorflowjs():
    """The `tensorflowjs` package with its converter, quantization and read_weights modules loaded, whether or
    not TensorFlow Decision Forests is installed."""
    with _decision_forests_placeholder():
        for module in ("tensorflowjs", "tensorflowjs.converters.tf_saved_model_conversion_v2",
                       "tensorflowjs.quantization", "tensorflowjs.read_weights"):
            importlib.import_module(module)
    return sys.modules["tensorflowjs"]


def quantization_dtype_map(quantize_float16=None, quantize_uint8=None):
    """`convert_tf_saved_model`'s quantization_dtype_map from the two flags' values, as tensorflowjs_converter
    builds it: None (flag absent), True (every weight) or "name,name,..." (those weights)."""
    quantization = import_tensorflowjs().quantization
    dtype_map = {}
    for dtype, value in ((quantization.QUANTIZATION_DTYPE_FLOAT16, quantize_float16),
                         (quantization.QUANTIZATION_DTYPE_UINT8, quantize_uint8)):
        if value is not None:
            dtype_map[dtype] = value.split(",") if isinstance(value, str) else value
    return dtype_map or None


def convert(saved_model_dir, output_dir, signature_name="serving_default", saved_model_tags="serve",
            quantize_float16=None, quantize_uint8=None):
    """Convert the SavedModel in `saved_model_dir` to a TF.js graph model (model.json + group*.bin) in
    `output_dir`, as `tensorflowjs_converter --input_format=tf_saved_model --output_format=tfjs_graph_model` does."""
    tensorflowjs = import_tensorflowjs()
    tensorflowjs.converters.tf_saved_model_conversion_v2.convert_tf_saved_model(
        str(saved_model_dir), str(output_dir), signature_def=signature_name, saved_model_tags=saved_model_tags,
        quantization_dtype_map=quantization_dtype_map(quantize_float16, quantize_uint8))
    return output_dir


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lib.converter", description=__doc__.split("\n")[0])
    parser.add_argument("saved_model_dir")
    parser.add_argument("output_dir")
    parser.add_argument("--signature_name", default="serving_default")
    parser.add_argument("--saved_model_tags", default="serve")
    for flag in ("--quantize_float16", "--quantize_uint8"):
        parser.add_argument(flag, nargs="?", const=True, default=None, metavar="NAMES",
                            help="quantize every weight, or the comma-separated weight names given")
    args = parser.parse_args(argv)
    convert(args.saved_model_dir, args.output_dir, args.signature_name, args.saved_model_tags,
            args.quantize_float16, args.quantize_uint8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
