"""tflite_export: Keras to TFLite for named targets, verified on the LiteRT runtime.

This package never imports kstruct: it can be used on any Keras 3 model.
"""
