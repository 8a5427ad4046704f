"""Specification of lib.converter: the tensorflowjs converter imported and run without TensorFlow Decision Forests,
with tensorflowjs_converter's quantization flags."""

import subprocess
import sys

import pytest

from lib import export, paths
from tests.test_export import quantized_dtypes, tiny_saved_model


@pytest.mark.slow
def test_converter_imports_and_converts_without_tensorflow_decision_forests(tmp_path):
    """As on Colab, which has no TF-DF: the import is made to fail (None in sys.modules), the converter still
    imports and converts, and the process gets its failing import back afterwards."""
    saved_model = tiny_saved_model(tmp_path / "saved")
    job = ("import sys; sys.modules['tensorflow_decision_forests'] = None\n"
           "from lib import converter\n"
           "converter.main([sys.argv[1], sys.argv[2], '--signature_name', 'serve', '--quantize_uint8'])\n"
           "assert sys.modules['tensorflow_decision_forests'] is None, 'placeholder left behind'\n"
           "try:\n    import tensorflow_decision_forests\nexcept ModuleNotFoundError:\n    print('still absent')\n")
    result = subprocess.run([sys.executable, "-c", job, str(saved_model), str(tmp_path / "tfjs")],
                            cwd=paths.PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("still absent")
    assert quantized_dtypes(export.verify_tfjs_model(tmp_path / "tfjs", image_size=2)) == {"uint8"}


def test_quantization_flags_map_to_the_converters_dtype_map():
    from lib import converter

    quantization = converter.import_tensorflowjs().quantization
    assert converter.quantization_dtype_map() is None
    assert converter.quantization_dtype_map(quantize_float16=True) == {quantization.QUANTIZATION_DTYPE_FLOAT16: True}
    assert converter.quantization_dtype_map(quantize_float16=True, quantize_uint8="a/kernel,b/*") == {
        quantization.QUANTIZATION_DTYPE_FLOAT16: True, quantization.QUANTIZATION_DTYPE_UINT8: ["a/kernel", "b/*"]}
