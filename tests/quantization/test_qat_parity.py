"""The int8 file computes what the Keras QAT model computes."""

import numpy as np

import tflite_export


def test_int8_file_agrees_with_keras_qat_model_on_test_digits(qat_cnn, qat_cnn_int8, digits):
    _, _, x_test, y_test = digits
    keras_predictions = qat_cnn.predict(x_test, verbose=0).argmax(-1)
    tflite_predictions = tflite_export.predict(qat_cnn_int8, x_test).argmax(-1)

    agreement = np.mean(keras_predictions == tflite_predictions)
    keras_accuracy = np.mean(keras_predictions == y_test)
    tflite_accuracy = np.mean(tflite_predictions == y_test)
    assert agreement >= 0.995, f"top-1 agreement {agreement:.4f}"
    assert abs(keras_accuracy - tflite_accuracy) <= 0.002, (keras_accuracy, tflite_accuracy)


def test_int8_file_uses_the_ranges_learned_in_training(qat_cnn, qat_cnn_int8):
    from kstruct.quantization import FakeQuant

    input_quantizer = next(layer for layer in qat_cnn.layers if isinstance(layer, FakeQuant))
    scale, zero_point = input_quantizer.quantization_params()
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=qat_cnn_int8)
    file_scale, file_zero_point = it.get_input_details()[0]["quantization"]
    np.testing.assert_allclose(file_scale, scale, rtol=1e-5)
    assert file_zero_point == zero_point
