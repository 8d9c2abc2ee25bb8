"""The small digit CNN the distribution tests train on several replicas and workers: a convolution with
BatchNormalization (whose moving statistics each replica computes from its own batches), optionally a
depthwise convolution with BatchNormalization (the pattern QAT folds), and two dense layers."""

import keras


def bn_cnn(depthwise: bool = False, strides: int = 1) -> keras.Model:
    """A compiled Sequential classifier of 28x28x1 digits; layer names are what the tests look up."""
    layers = [
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, strides=strides, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(name="relu"),
    ]
    if depthwise:
        layers += [
            keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw"),
            keras.layers.BatchNormalization(name="dw_bn"),
            keras.layers.ReLU(name="dw_relu"),
        ]
    layers += [
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(16, activation="relu", name="hidden"),
        keras.layers.Dense(10, activation="softmax", name="out"),
    ]
    model = keras.Sequential(layers)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
