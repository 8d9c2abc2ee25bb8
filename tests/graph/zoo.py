"""Small models of every shape kstruct's graph core must read and rebuild."""

import keras


def sequential() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dropout(0.5, name="drop"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(5, name="out"),
        ],
        name="sequential",
    )


def nested() -> keras.Model:
    inner_in = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", name="inner_conv")(inner_in)
    inner = keras.Model(inner_in, keras.layers.BatchNormalization(name="inner_bn")(x), name="inner")
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 1, name="stem")(inputs)
    x = inner(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="nested")


def resnet_style() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    stem = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", name="branch_a")(stem)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.ReLU(name="relu_a")(x)
    x = keras.layers.Add(name="add")([stem, x])
    y = keras.layers.Conv2D(4, 1, name="branch_b")(x)
    x = keras.layers.Concatenate(name="concat")([x, y])
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="resnet_style")


def raw_ops() -> keras.Model:
    """`x + y`, `x * 3.0` and a two-input `keras.ops.add` on symbolic tensors: Operations, not layers."""
    inputs = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs)
    b = keras.layers.Conv2D(4, 1, name="conv_b")(inputs)
    x = a + b
    x = x * 3.0
    x = keras.ops.add(x, keras.layers.Conv2D(4, 1, name="conv_c")(inputs))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="raw_ops")


def two_inputs() -> keras.Model:
    image = keras.Input((8, 8, 3), name="image")
    vector = keras.Input((5,), name="vector")
    x = keras.layers.Conv2D(4, 3, name="conv")(image)
    x = keras.layers.GlobalMaxPooling2D(name="gmp")(x)
    v = keras.layers.Dense(4, activation="relu", name="dense_v")(vector)
    x = keras.layers.Concatenate(name="concat")([x, v])
    return keras.Model([image, vector], keras.layers.Dense(2, name="out")(x), name="two_inputs")


def mobilenet_v2() -> keras.Model:
    return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10)


def mobilenet_v3_small() -> keras.Model:
    return keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), minimalistic=False, weights=None, classes=10)


ZOO = {
    "sequential": sequential,
    "nested": nested,
    "resnet_style": resnet_style,
    "raw_ops": raw_ops,
    "two_inputs": two_inputs,
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v3_small": mobilenet_v3_small,
}


def sample(model: keras.Model, n: int = 2, seed: int = 0):
    """Random inputs for `model`, one array per input."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=(n, *t.shape[1:])).astype("float32") for t in model.inputs]
    return arrays[0] if len(arrays) == 1 else arrays
