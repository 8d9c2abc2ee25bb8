"""Package hygiene: the public API, and what tflite_export must never import or use."""

import pathlib
import re

import tflite_export

PACKAGE = pathlib.Path(tflite_export.__file__).parent


def _sources():
    return {p.name: p.read_text() for p in PACKAGE.glob("*.py")}


def test_all_names_exist():
    for name in tflite_export.__all__:
        assert hasattr(tflite_export, name), name
    for name in ("convert", "predict", "evaluate", "analyze", "verify", "benchmark", "TARGETS", "ExportError"):
        assert name in tflite_export.__all__


def test_export_error_is_a_value_error():
    assert issubclass(tflite_export.ExportError, ValueError)
    assert issubclass(tflite_export.CompatibilityError, tflite_export.ExportError)


def test_tflite_export_never_imports_kstruct_or_keras_internals():
    for name, text in _sources().items():
        assert not re.search(r"^\s*(from|import)\s+kstruct\b", text, re.M), name
        assert "keras.src" not in text, name


def test_runtime_code_never_uses_tf_lite_interpreter():
    for name, text in _sources().items():
        assert not re.search(r"tf\.lite\.Interpreter\s*\(|tensorflow\.lite\.python\.interpreter|tflite_runtime", text), name
    assert "from ai_edge_litert.interpreter import Interpreter" in _sources()["runtime.py"]


def test_runtime_modules_do_not_import_tensorflow_at_module_level():
    for name in ("runtime.py", "benchmark.py", "analyze.py", "check.py", "evaluate.py", "verify.py", "__init__.py"):
        top_level = [line for line in _sources()[name].splitlines() if re.match(r"(from|import)\s+(tensorflow|keras)\b", line)]
        assert top_level == [], name
