"""Pruning sequence models: LSTM, GRU and SimpleRNN kernels and recurrent kernels, the layers inside
Bidirectional and TimeDistributed, and what `prune` says when a model holds nothing it prunes."""

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import kstruct
from kstruct.errors import PruningError
from kstruct.pruning import ConstantSparsity, PruneWrapper, prune, prune_channels, sparsity, strip

VOCAB, STEPS, TAGS = 20, 6, 5


def tagger(rnn=keras.layers.LSTM, *, mask_zero: bool = False, seed: int = 0) -> keras.Model:
    """Embedding -> Bidirectional(rnn(return_sequences)) -> TimeDistributed(Dense(softmax)): a sequence tagger."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((STEPS,), dtype="int32"),
            keras.layers.Embedding(VOCAB, 8, mask_zero=mask_zero, name="tokens"),
            keras.layers.Bidirectional(rnn(4, return_sequences=True), name="encoder"),
            keras.layers.TimeDistributed(keras.layers.Dense(TAGS, activation="softmax"), name="tags"),
        ],
        name="tagger",
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def sentences():
    rng = np.random.default_rng(7)
    x = rng.integers(1, VOCAB, (32, STEPS))
    x[:8, 4:] = 0  # padding, which mask_zero masks
    return x, rng.integers(0, TAGS, (32, STEPS))


def _run(model, x) -> np.ndarray:
    """The model's outputs in inference mode (a direct call: `predict` would trace a function per model)."""
    return keras.ops.convert_to_numpy(model(x, training=False))


def _encoder_weights(model, wrapped: bool) -> dict[str, np.ndarray]:
    layer = model.get_layer("pruned_encoder" if wrapped else "encoder")
    if wrapped:
        values = layer.masked_weights()
    else:
        cells = [layer.forward_layer.cell, layer.backward_layer.cell]
        values = [getattr(cell, name) for cell in cells for name in ("kernel", "recurrent_kernel")]
    return {f"w{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(values)}


@pytest.mark.parametrize("rnn", [keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN])
def test_kernels_and_recurrent_kernels_of_both_directions_are_masked_inside_the_recurrence(rnn, sentences):
    x, _ = sentences
    model = tagger(rnn, mask_zero=True)
    pruned = prune(model, ConstantSparsity(0.5, begin_step=0, frequency=1))
    assert [type(layer).__name__ for layer in pruned.layers] == ["Embedding", "PruneWrapper", "PruneWrapper"]
    encoder = pruned.get_layer("pruned_encoder")
    inner = encoder.layer
    expected = [inner.forward_layer.cell.kernel, inner.forward_layer.cell.recurrent_kernel,
                inner.backward_layer.cell.kernel, inner.backward_layer.cell.recurrent_kernel]
    assert len(encoder.pruned_weights) == 4 and all(a is b for a, b in zip(encoder.pruned_weights, expected))
    # All-ones masks: the wrapped model is the original, padding mask included.
    np.testing.assert_array_equal(_run(pruned, x), _run(model, x))

    pruned(x, training=True)  # one training step: the masks are computed at step 0
    for name, value in _encoder_weights(pruned, wrapped=True).items():
        assert np.sum(value == 0) == value.size // 2, name
    dense = keras.ops.convert_to_numpy(pruned.get_layer("pruned_tags").masked_weight())
    assert np.sum(dense == 0) == dense.size // 2

    stripped = strip(pruned)
    assert [type(layer).__name__ for layer in stripped.layers] == ["Embedding", "Bidirectional", "TimeDistributed"]
    assert [layer.name for layer in stripped.layers] == ["tokens", "encoder", "tags"]
    assert type(stripped.get_layer("encoder").forward_layer) is rnn
    for name, value in _encoder_weights(stripped, wrapped=False).items():
        np.testing.assert_array_equal(value, _encoder_weights(pruned, wrapped=True)[name])
    # The plain layers holding the zeros compute what the wrapper computed at every time step.
    np.testing.assert_allclose(_run(stripped, x), _run(pruned, x), atol=1e-6)
    assert {(layer.name, layer.zeros, layer.size) for layer in sparsity(stripped).layers} == {
        ("encoder", sum(v.size for v in _encoder_weights(stripped, False).values()) // 2,
         sum(v.size for v in _encoder_weights(stripped, False).values())),
        ("tags", 20, 40),
    }


def test_a_pruned_recurrent_model_saved_mid_training_loads_with_its_masks_and_schedule(sentences, tmp_path):
    x, _ = sentences
    pruned = prune(tagger(), ConstantSparsity(0.5, begin_step=0, frequency=1))
    for batch in np.array_split(x, 2):  # two training steps (the optimize test below trains with fit)
        pruned(batch, training=True)
    pruned.save(tmp_path / "pruned.keras")
    loaded = keras.models.load_model(tmp_path / "pruned.keras")
    encoder = loaded.get_layer("pruned_encoder")
    assert isinstance(encoder, PruneWrapper) and int(encoder.pruning_step.numpy()) == 2
    for mask, original in zip(encoder.masks, pruned.get_layer("pruned_encoder").masks):
        np.testing.assert_array_equal(mask.numpy(), original.numpy())
    np.testing.assert_array_equal(_run(loaded, x), _run(pruned, x))
    assert sparsity(strip(loaded)).overall == pytest.approx(0.5)


def test_two_of_four_sparsity_holds_along_the_input_axis_of_every_recurrent_kernel(sentences):
    x, _ = sentences
    pruned = prune(tagger(keras.layers.GRU), m_by_n=(2, 4))
    pruned(x, training=True)
    for name, value in _encoder_weights(pruned, wrapped=True).items():
        groups = value.reshape(-1, 4, value.shape[-1])  # (inputs/4, 4, gates*units)
        assert np.all(np.sum(groups != 0, axis=1) == 2), name


def test_dropout_inside_a_pruned_lstm_draws_new_masks_at_every_step():
    """The wrapper runs the layer in a stateless scope; the seed the layer advances there is written back."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((STEPS, 3)), keras.layers.LSTM(4, dropout=0.5, recurrent_dropout=0.3)])
    pruned = prune(model, ConstantSparsity(0.5, begin_step=0, frequency=1))
    seed = next(v for v in pruned.layers[0].layer.variables if "seed_generator" in v.path)
    before = keras.ops.convert_to_numpy(seed).copy()
    x = np.ones((2, STEPS, 3), "float32")
    first, second = (keras.ops.convert_to_numpy(pruned(x, training=True)) for _ in range(2))
    assert not np.array_equal(keras.ops.convert_to_numpy(seed), before)
    assert np.abs(first - second).max() > 0


def _file_weights(blob: bytes) -> list[np.ndarray]:
    """Each distinct weight tensor (input 1) of the file's FULLY_CONNECTED ops, read back with LiteRT."""
    interpreter = Interpreter(model_content=blob, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    indices = {op["inputs"][1] for op in interpreter._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"}
    return [interpreter.get_tensor(i) for i in sorted(indices)]


def test_optimize_prunes_a_tagger_and_its_int8_file_keeps_every_zero(sentences):
    x, y = sentences
    result = kstruct.optimize(tagger(), "prune(0.5) + ptq", train_data=(x, y), epochs=1, batch_size=8,
                              target="int8", verbose=0)
    original, pruned, ptq = result.report.stages
    assert (pruned.sparsity, pruned.prunable_params, pruned.prunable_layers) == (0.5, 424, 2)
    assert pruned.not_prunable == ["tokens"]
    assert str(sparsity(result.model)).splitlines()[-1].split() == ["overall", "50.00%", "212", "424"]
    assert [type(layer).__name__ for layer in result.model.layers] == ["Embedding", "Bidirectional", "TimeDistributed"]
    assert pruned.max_abs_diff < 0.02 and ptq.max_abs_diff < 0.02
    rows = {row["layer"]: row for row in result.report.layers}  # layers.png: before and after, per layer
    assert rows["encoder"]["before"]["sparsity"] == 0.0 and rows["encoder"]["after"]["sparsity"] == 0.5
    assert rows["encoder"]["after"]["channels"] == 16 and rows["tags"]["after"]["sparsity"] == 0.5
    # The converter unrolls the LSTM into FULLY_CONNECTED ops whose int8 weights are the kernels,
    # transposed: each Keras kernel's zeros are exactly the zeros of one of the file's tensors.
    # (A recurrent-kernel column left all zero used to get a zero scale that XNNPACK refused.)
    file_zeros = [w == 0 for w in _file_weights(result.tflite)]
    assert all(w.dtype == np.int8 for w in _file_weights(result.tflite))
    kernels = [w for layer in result.model.layers[1:] for w in layer.get_weights() if w.ndim == 2]
    assert len(kernels) == 5
    for kernel in kernels:
        assert any(z.shape == kernel.T.shape and np.array_equal(z, kernel.T == 0) for z in file_zeros), kernel.shape


def test_a_model_with_nothing_to_prune_gets_a_pruning_error_naming_each_layer_and_why():
    inputs = keras.Input((STEPS,), dtype="int32")
    h = keras.layers.GlobalAveragePooling1D(name="pool")(keras.layers.Embedding(VOCAB, 4, name="tokens")(inputs))
    model = keras.Model(inputs, keras.layers.LayerNormalization(name="norm")(h), name="bag")
    with pytest.raises(PruningError) as error:
        prune(model, ConstantSparsity(0.5))
    assert str(error.value) == (
        "kstruct.pruning.prune: model `bag` has no layer kstruct can prune. Layers with weights: tokens (Embedding: "
        "a lookup table: each row is one token's vector, and zeroing rows loses tokens); norm (LayerNormalization: "
        "normalization scales, not a weight matrix). Layers without weights: GlobalAveragePooling1D, InputLayer. "
        "kstruct prunes the kernels of Dense, Conv*, DepthwiseConv2D and SeparableConv2D layers and the kernel and "
        "recurrent kernel of LSTM, GRU and SimpleRNN, also inside Bidirectional and TimeDistributed."
    )


def test_prune_channels_on_a_tagger_says_it_has_no_conv_or_dense_channels_to_remove():
    with pytest.raises(PruningError) as error:
        prune_channels(tagger(), 0.5)
    assert str(error.value) == (
        "kstruct.pruning.prune_channels: model `tagger` has no channel group to prune. Frozen groups: none, since "
        "no Conv/Dense layer's output channels can be removed: its layers with weights are tokens (Embedding), "
        "encoder (Bidirectional), tags (TimeDistributed) (recurrent layers and Bidirectional/TimeDistributed "
        "wrappers are not channel-pruned; prune(...) prunes their weights). Prune a model with Conv/Dense layers "
        "whose outputs are not model outputs."
    )


def test_the_console_script_prunes_a_saved_tagger_and_prints_what_the_sparsity_is_over(sentences, tmp_path):
    from tests.console import kstruct as console

    x, y = sentences
    tagger().save(tmp_path / "tagger.keras")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    done = console("optimize", tmp_path / "tagger.keras", "--strategy", "prune(0.5)", "--data", tmp_path / "data.npz",
                   "--target", "float32", "--epochs", "1", "--batch-size", "8", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "kstruct: prune(0.5): " in done.stdout
    assert "sparsity 50.0% of the 424 weights in 2 prunable layers (model: " in done.stdout
    assert "not prunable (left dense, outside the sparsity column): tokens" in done.stdout
    saved = keras.models.load_model(tmp_path / "out" / "model.keras", compile=False)
    assert sparsity(saved).overall == 0.5 and type(saved.get_layer("encoder")) is keras.layers.Bidirectional


def test_the_cli_says_in_one_line_that_a_model_has_nothing_to_prune(sentences, tmp_path, capsys):
    from kstruct.cli import main

    x, y = sentences
    inputs = keras.Input((STEPS,), dtype="int32")
    h = keras.layers.GlobalAveragePooling1D(name="pool")(keras.layers.Embedding(VOCAB, 4, name="tokens")(inputs))
    lookups = keras.Model(inputs, keras.layers.LayerNormalization(name="norm")(h), name="lookups")
    lookups.compile("adam", "mse")
    lookups.save(tmp_path / "lookups.keras")
    np.savez(tmp_path / "data.npz", x=x, y=np.zeros((len(x), 4), "float32"))
    code = main(["optimize", str(tmp_path / "lookups.keras"), "--strategy", "prune(0.5)", "--data",
                 str(tmp_path / "data.npz"), "--target", "float32", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("kstruct: error: kstruct.pruning.prune: model `lookups` has no layer kstruct can prune. "
                          "Layers with weights: tokens (Embedding: a lookup table")
    assert not (tmp_path / "out").exists()


def test_a_functional_model_passes_its_recurrent_layers_their_masks(sentences):
    """A functional graph records `mask=` on a recurrent layer's call (None, or Embedding(mask_zero)'s):
    the wrapper takes it and hands it on, so the masked model computes what the original does."""
    x, _ = sentences
    keras.utils.set_random_seed(0)
    inputs = keras.Input((STEPS,), dtype="int32")
    hidden = keras.layers.Embedding(VOCAB, 8, mask_zero=True)(inputs)
    hidden = keras.layers.LSTM(4, return_sequences=True)(hidden)
    outputs = keras.layers.Dense(TAGS)(keras.layers.LSTM(4)(hidden))
    model = keras.Model(inputs, outputs)
    wrapped = prune(model, ConstantSparsity(0.5, begin_step=10**6))  # masks all ones until step 10**6
    np.testing.assert_allclose(_run(wrapped, x), _run(model, x), atol=1e-6)
    unmasked = keras.Model(inputs, keras.layers.Dense(TAGS)(keras.layers.LSTM(4)(keras.layers.LSTM(4, return_sequences=True)(
        keras.layers.Embedding(VOCAB, 8)(inputs)))))
    assert isinstance(prune(unmasked, ConstantSparsity(0.5, begin_step=0)).layers[2], PruneWrapper)
