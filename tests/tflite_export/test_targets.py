import pytest

import tflite_export
from tflite_export.targets import get_target


def test_targets_are_the_documented_names_in_order():
    assert tflite_export.TARGETS == (
        "float32", "dynamic", "float16", "int8", "int16x8", "gpu", "edgetpu", "micro", "int4", "int4-weights"
    )


def test_every_target_row_has_its_default_io_dtype_first():
    for name in tflite_export.TARGETS:
        row = get_target(name)
        assert row.name == name
        assert row.io_dtypes, name


def test_unknown_target_error_lists_valid_targets():
    with pytest.raises(tflite_export.ExportError) as info:
        get_target("foo")
    assert str(info.value) == (
        "Expected `target` to be one of ('float32', 'dynamic', 'float16', 'int8', 'int16x8', "
        "'gpu', 'edgetpu', 'micro', 'int4', 'int4-weights'). Received: target='foo'"
    )
    assert isinstance(info.value, ValueError)
