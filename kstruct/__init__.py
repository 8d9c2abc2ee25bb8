"""kstruct: shrink Keras 3 models and ship them as TFLite."""
