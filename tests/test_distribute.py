"""`optimize(..., distribution=...)` and the per-step state under tf.distribute (issue 22).

The two-replica run needs two logical CPU devices, which TensorFlow sets only before it first
lists its devices, so it runs in one process of its own: this module run as a script (`python -m
tests.test_distribute` prints its JSON). It runs every registered step: prune(0.75) + qat,
drop_blocks(1) + prune_channels(0.5) + cluster(8) + ptq, prune(2:4) + distill (once more on one
device, to compare), factorize(0.5) of that result, and a 2-trial `auto` and `search`. The checks
of the argument itself run in-process. JAX: tests/test_distribute_jax.py.
"""

import ast
import json
import pathlib
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "kstruct"


def test_every_weight_kstruct_creates_names_its_aggregation():
    """A counter left to the default could advance once per replica; each `add_weight` says how it aggregates."""
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_weight":
                if "aggregation" not in {keyword.arg for keyword in node.keywords}:
                    missing.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not missing, f"add_weight without aggregation=: {missing}"


def _model():
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _data():
    import numpy as np

    return np.zeros((8, 4), "float32"), np.zeros((8,), "int32")


@pytest.mark.parametrize(
    "distribution, words",
    [
        ("mirrored", "Received: distribution=str (a builtins.str)"),
        (4, "Received: distribution=int (a builtins.int)"),
    ],
)
def test_optimize_refuses_what_is_not_a_distribution_in_one_line(distribution, words):
    import kstruct
    from kstruct.errors import DistributionError

    with pytest.raises(DistributionError) as error:
        kstruct.optimize(_model(), "prune(0.5)", train_data=_data(), distribution=distribution, verbose=0)
    message = str(error.value)
    assert "\n" not in message
    assert "Expected `distribution` to be a tf.distribute.Strategy on the tensorflow backend" in message
    assert words in message


def test_optimize_refuses_a_keras_distribution_on_tensorflow_naming_both():
    import keras

    import kstruct
    from kstruct.errors import DistributionError

    # Uninitialized: only its type is read, and building one on TensorFlow would start DTensor.
    data_parallel = object.__new__(keras.distribution.DataParallel)
    with pytest.raises(DistributionError, match=r"^Expected `distribution` to be a tf\.distribute\.Strategy on the "
                       r"tensorflow backend\. Received: distribution=DataParallel \(a keras\.distribution\.Distribution\)$"):
        kstruct.optimize(_model(), "prune(0.5)", train_data=_data(), distribution=data_parallel, verbose=0)


def test_optimize_refuses_a_strategy_other_than_the_scope_it_runs_in():
    import tensorflow as tf

    import kstruct
    from kstruct.errors import DistributionError

    outer, inner = tf.distribute.OneDeviceStrategy("/cpu:0"), tf.distribute.OneDeviceStrategy("/cpu:0")
    with outer.scope():
        model = _model()
        with pytest.raises(DistributionError, match="is not the tf.distribute strategy whose scope"):
            kstruct.optimize(model, "prune(0.5)", train_data=_data(), distribution=inner, verbose=0)


@pytest.fixture(scope="module")
def two_replicas():
    """The JSON the script below prints, run once for the module (about 45 s of CPU)."""
    from tests.console import ROOT, environment, spawn

    # A process of its own that has not yet listed TensorFlow's devices (a fork of tests/console.py's zygote).
    env = environment(KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    process = spawn([__name__], module=__name__, env=env, cwd=ROOT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_prune_and_qat_under_mirrored_strategy_train_on_two_replicas(two_replicas):
    assert two_replicas["replicas"] == 2
    assert two_replicas["distribution"] == "MirroredStrategy"
    assert two_replicas["variables_mirrored"]  # the steps built their models in the strategy's scope


def test_the_report_counts_the_replicas_of_the_scope_optimize_is_called_in(two_replicas):
    assert two_replicas["in_scope"] == {"distribution": "MirroredStrategy", "replicas": 2}


def test_pruning_masks_are_identical_on_every_replica(two_replicas):
    pruned = two_replicas["pruned"]
    assert set(pruned) == {"conv", "hidden", "out"}
    assert all(layer["masks_identical"] for layer in pruned.values())


def test_pruning_step_counter_advances_once_per_global_step(two_replicas):
    steps = two_replicas["global_steps"]
    assert steps == 2 * 8  # 2 epochs of 256 rows in global batches of 32
    assert all(layer["pruning_step"] == [steps, steps] for layer in two_replicas["pruned"].values())


def test_sparsity_is_exact_after_prune_and_qat(two_replicas):
    assert two_replicas["pruned_sparsity"] == {"conv": 0.75, "hidden": 0.75, "out": 0.75}
    assert two_replicas["final_sparsity"] == pytest.approx(0.75, abs=1e-9)


def test_quantizer_ranges_are_the_same_on_every_replica(two_replicas):
    assert two_replicas["ranges"] > 0
    assert two_replicas["ranges_identical"]


def test_int8_file_agrees_with_the_qat_model(two_replicas):
    assert two_replicas["agreement"] >= 0.99


# The other registered steps, in the same subprocess: drop_blocks(1) + prune_channels(0.5) + cluster(8)
# + ptq on a two-block residual CNN, then prune(2:4) + distill on the same model, 1 epoch of 256 rows
# (8 global steps) each.


def test_every_step_trains_on_two_replicas_in_the_strategy_scope(two_replicas):
    for run in ("structure", "n_by_m"):
        assert two_replicas[run]["replicas"] == 2
        assert two_replicas[run]["variables_mirrored"]  # the final model built in the scope
    # every wrapped model a step trained (channel masks, clusters, N:M masks) built in the scope
    wrapped = [*two_replicas["structure"]["channels"].values(), *two_replicas["structure"]["clusters"].values(),
               *two_replicas["n_by_m"]["masks"].values()]
    assert wrapped and all(layer["mirrored"] for layer in wrapped)


def test_the_returned_models_hold_the_same_values_on_every_replica(two_replicas):
    # distill returns the model it fitted: Keras's BatchNormalization statistics, kept per replica,
    # differed on the two (by ~1e-3) until kstruct averaged them after each fit
    assert two_replicas["structure"]["same_on_replicas"]
    assert two_replicas["n_by_m"]["same_on_replicas"]


def test_drop_blocks_scores_blocks_as_one_device_does(two_replicas):
    structure = two_replicas["structure"]
    assert structure["dropped"] == [structure["cheapest_on_one_device"]]
    # each block ablated through a gate variable: its assignment reached both replicas
    assert structure["scores"] == pytest.approx(structure["scores_on_one_device"], abs=1e-5)
    assert structure["dropped"][0] not in structure["final_layers"]


def test_prune_channels_masks_agree_on_replicas_and_the_channels_are_removed(two_replicas):
    structure = two_replicas["structure"]
    channels = structure["channels"]
    assert channels and all(layer["state_identical"] for layer in channels.values())
    assert all(layer["pruning_step"] == [8, 8] for layer in channels.values())  # once per global step
    before, after = structure["channel_params"]
    assert after < before / 2  # halved widths: really fewer parameters, not zeros
    assert structure["widths"] and all(change.endswith(f"->{int(change.split('->')[0]) // 2}")
                                       for change in structure["widths"].values())


def test_cluster_centroids_agree_on_replicas_and_kernels_hold_at_most_8_values(two_replicas):
    clusters = two_replicas["structure"]["clusters"]
    assert clusters and all(layer["centroids_identical"] and layer["assignments_identical"]
                            for layer in clusters.values())
    assert all(layer["values_per_replica"] <= 8 for layer in clusters.values())
    distinct = two_replicas["structure"]["distinct_values"]
    assert set(distinct) == set(clusters) and all(count <= 8 for count in distinct.values())


def test_ptq_file_agrees_with_the_clustered_model(two_replicas):
    structure = two_replicas["structure"]
    # within two steps of the int8 softmax output (1/256) everywhere; top-1 agreement on this near-chance
    # model (top-1 margin ~0.005, about one step) flips with that rounding, on one device alike
    assert structure["ptq_max_abs_diff"] <= 2 / 256
    assert structure["ptq_agreement"] >= 0.75


def test_n_by_m_pattern_is_exact_after_prune_and_distill(two_replicas):
    n_by_m = two_replicas["n_by_m"]
    assert all(layer["masks_identical"] for layer in n_by_m["masks"].values())
    # every pruned kernel keeps exactly 2 of each 4 inputs, also after distill fine-tunes it
    assert n_by_m["pruned"] == {"res1_conv": 0.5, "res2_conv": 0.5, "hidden": 0.5, "out": 0.5}
    assert n_by_m["groups_with_2_of_4"] == n_by_m["groups"] > 0


def test_distill_trains_on_two_replicas(two_replicas):
    distill = two_replicas["n_by_m"]["distill_history"]
    assert len(distill["distillation_loss"]) == 1 and distill["distillation_loss"][0] > 0


def test_one_device_run_reaches_the_same_sparsity_and_a_close_accuracy(two_replicas):
    n_by_m = two_replicas["n_by_m"]
    assert n_by_m["sparsity"] == n_by_m["one_device"]["sparsity"]
    # the same seed and batches; the replicas' BatchNorm sees half a batch each (chance is 0.1)
    assert n_by_m["accuracy"] == pytest.approx(n_by_m["one_device"]["accuracy"], abs=0.1)


# factorize, auto and search, in the same subprocess: factorize(0.5) of the Dense layer `hidden` of the
# model prune(2:4) + distill returned, then auto and search with 2 random trials of 1 epoch each on a
# fresh residual CNN, a params budget of its own size (float32 files).


def test_factorize_splits_the_dense_layer_at_half_rank_and_fine_tunes_on_two_replicas(two_replicas):
    factorize = two_replicas["factorize"]
    assert factorize["replicas"] == 2 and factorize["variables_mirrored"] and factorize["same_on_replicas"]
    assert {k: v for k, v in factorize["factorized"]["hidden"].items() if k in ("form", "rank", "full_rank")} == {
        "form": "svd", "rank": 8, "full_rank": 16}
    assert factorize["factors"] == {"hidden_factor": [288, 8], "hidden": [8, 16]}  # 288 -> 8 -> 16
    before, after = factorize["params"]
    assert before - after == 288 * 16 - 8 * (288 + 16)
    # it predicts: one epoch's loss below a uniform guess's (ln 10), its file agrees with it, and the
    # accuracy stays near the trained model's (~0.24, chance 0.1) it started from
    assert len(factorize["loss"]) == 1 and factorize["loss"][0] < 2.302585
    assert factorize["agreement"] >= 0.99
    assert factorize["accuracy"][1] >= factorize["accuracy"][0] - 0.15


def test_auto_trains_every_trial_on_two_replicas_and_returns_the_best_chain(two_replicas):
    auto = two_replicas["auto"]
    assert auto["replicas"] == 2 and auto["variables_mirrored"] and auto["same_on_replicas"]
    # the first trial is every hyperparameter's default; the second Keras Tuner's draw (seed 1)
    assert len(auto["rows"]) == 2 and auto["rows"][0]["strategy"] == (
        "prune_channels(0.5, epochs=1, optimizer='adam', learning_rate=0.001, lr_schedule='constant', batch_size=32)")
    trained = [row for row in auto["rows"] if row["status"] in ("feasible", "over budget")]
    # each trial that trained did so in the strategy's scope (before: the first trial's clear_session
    # reset TensorFlow's graph, the scope with it, and leaving the scope raised IndexError)
    assert len(auto["trained"]) == len(trained) >= 1
    assert all(t["replicas"] == 2 and t["mirrored"] and t["same_on_replicas"] for t in auto["trained"])
    # one epoch for each training step of the trial's chain
    assert [t["epochs"] for t in auto["trained"]] == [row["strategy"].count("epochs=1") for row in trained]
    best = auto["best"]
    assert best["status"] == "feasible" and auto["strategy"] == best["strategy"]
    assert best["strategy"] in [row["strategy"] for row in auto["rows"]]
    assert auto["params"] == best["params"]


def test_search_builds_every_trial_on_two_replicas_and_returns_the_best_within_budget(two_replicas):
    search = two_replicas["search"]
    assert search["replicas"] == 2 and search["variables_mirrored"] and search["same_on_replicas"]
    assert search["trials"] == 2
    assert len(search["built"]) >= 2 and all(b["replicas"] == 2 and b["mirrored"] for b in search["built"])
    assert search["params"] == search["best_params"] <= search["budget"]


def _run_two_replicas() -> dict:
    """prune(0.75) + qat on a tiny CNN under MirroredStrategy over two logical CPUs, through `distribution=`."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    import kstruct
    import kstruct.pruning.step as prune_step
    from kstruct.data import load_mnist_5k

    (x, y), (x_val, y_val) = load_mnist_5k()
    x, y, x_val, y_val = x[:256], y[:256], x_val[:128], y_val[:128]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    def copies(variable) -> list:
        value = variable.value
        return [np.asarray(v) for v in getattr(value, "values", (value,))]

    pruned, strip = {}, prune_step.strip

    def strip_and_record(model, **kwargs):  # the wrappers' state on each replica, just before strip drops it
        from kstruct.pruning.prune import wrappers

        for wrapper in wrappers(model):
            masks = copies(wrapper.mask)
            pruned[wrapper.layer.name] = {
                "masks_identical": len(masks) == 2 and all(np.array_equal(masks[0], m) for m in masks[1:]),
                "pruning_step": [int(v) for v in copies(wrapper.pruning_step)],
            }
        return strip(model, **kwargs)

    prune_step.strip = strip_and_record
    keras.utils.set_random_seed(0)
    from tests.bn_cnn import bn_cnn
    model = bn_cnn()
    result = kstruct.optimize(
        model, "prune(0.75) + qat", train_data=(x, y), validation_data=(x_val, y_val), epochs=2, batch_size=32,
        distribution=strategy, verbose=0,
    )
    prune_step.strip = strip
    ranges = [v for v in result.model.variables if v.path.endswith(("min_value", "max_value"))]
    report = result.report
    from kstruct.engine.distribute import describe

    with strategy.scope():  # `with strategy.scope(): optimize(...)`, the pattern without the argument
        in_scope = describe(None)
    return {
        "in_scope": in_scope,
        "distribution": report.settings["distribution"],
        "replicas": report.settings["replicas"],
        "variables_mirrored": all(len(copies(v)) == 2 for v in result.model.variables),
        "global_steps": report.settings["steps_per_epoch"] * report.settings["epochs"],
        "pruned": pruned,
        "pruned_sparsity": report.stages[1].notes["pruned_layers"],
        "final_sparsity": report.stages[-1].sparsity,
        "ranges": len(ranges),
        "ranges_identical": all(np.array_equal(*copies(v)) for v in ranges),
        "agreement": report.stages[-1].agreement,
        **_other_steps(strategy, copies, (x, y), (x_val, y_val)),
    }


def _residual_cnn():
    """Two residual blocks (drop_blocks has one to choose), inputs in multiples of 4 (N:M)."""
    import keras

    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="stem")(inputs)
    for block in ("res1", "res2"):
        r = keras.layers.Conv2D(8, 3, padding="same", name=f"{block}_conv")(h)
        # momentum 0.5: moving statistics that catch up within 8 steps (at 0.99 the model stays at chance)
        r = keras.layers.BatchNormalization(momentum=0.5, name=f"{block}_bn")(r)
        h = keras.layers.Add(name=f"{block}_add")([h, keras.layers.ReLU(name=f"{block}_relu")(r)])
    h = keras.layers.Flatten(name="flatten")(keras.layers.MaxPooling2D(2, name="pool")(h))
    h = keras.layers.Dense(16, activation="relu", name="hidden")(h)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="out")(h))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _other_steps(strategy, copies, train, validation) -> dict:
    """drop_blocks, prune_channels, cluster and ptq in one call, prune(2:4) + distill in another, under
    `strategy`; each step's wrappers recorded (on every replica) just before the step strips them."""
    import keras
    import numpy as np

    import kstruct
    import kstruct.clustering.step as cluster_step
    import kstruct.pruning.channels_step as channels_step
    import kstruct.pruning.step as prune_step
    from kstruct.clustering.cluster import wrappers as cluster_wrappers
    from kstruct.pruning import removable_blocks, score_blocks
    from kstruct.pruning.channels import channel_wrappers
    from kstruct.pruning.prune import wrappers as prune_wrappers

    def identical(variable) -> bool:
        values = copies(variable)
        return len(values) == 2 and np.array_equal(values[0], values[1])

    def mirrored(layer) -> bool:
        return all(len(copies(v)) == 2 for v in layer.variables)

    def same_on_replicas(model) -> bool:  # the model optimize returns predicts alike on every replica
        return all(identical(v) for v in model.variables)

    recorded = {"channels": {}, "clusters": {}, "masks": {}}

    def record_channels(model):
        for wrapper in channel_wrappers(model):
            recorded["channels"][wrapper.layer.name] = {
                "mirrored": mirrored(wrapper),
                "state_identical": all(identical(v) for v in (wrapper.mask, wrapper.channel_rank, wrapper.group_size)),
                "pruning_step": [int(v) for v in copies(wrapper.pruning_step)],
            }

    def record_clusters(model):
        for wrapper in cluster_wrappers(model):
            entry = wrapper._entry("kernel")
            kernels = [c[a] for c, a in zip(copies(entry.centroids), copies(entry.assignments))]  # per replica
            recorded["clusters"][wrapper.layer.name] = {
                "mirrored": mirrored(wrapper),
                "centroids_identical": identical(entry.centroids),
                "assignments_identical": identical(entry.assignments),
                "values_per_replica": max(np.unique(k).size for k in kernels),
            }

    def record_masks(model):
        for wrapper in prune_wrappers(model):
            recorded["masks"][wrapper.layer.name] = {
                "mirrored": mirrored(wrapper), "masks_identical": identical(wrapper.mask),
            }

    def before(function, record):
        def wrapped(model, *args, **kwargs):
            record(model)
            return function(model, *args, **kwargs)
        return wrapped

    originals = channels_step.strip_channels, cluster_step.strip, prune_step.strip
    channels_step.strip_channels = before(channels_step.strip_channels, record_channels)
    cluster_step.strip = before(cluster_step.strip, record_clusters)
    prune_step.strip = before(prune_step.strip, record_masks)

    keras.utils.set_random_seed(0)
    model = _residual_cnn()
    x_val, y_val = validation
    one_device = score_blocks(model, removable_blocks(model), "loss", data=(x_val, y_val))  # what drop_blocks sees
    result = kstruct.optimize(
        model, "drop_blocks(1) + prune_channels(0.5) + cluster(8) + ptq", train_data=train, validation_data=validation,
        epochs=1, batch_size=32, distribution=strategy, verbose=0,
    )
    stages = result.report.stages
    structure = {
        "replicas": result.report.settings["replicas"],
        "variables_mirrored": mirrored(result.model),
        "same_on_replicas": same_on_replicas(result.model),
        "dropped": stages[1].notes["dropped"],
        "scores": stages[1].notes["scores"],
        "scores_on_one_device": one_device,
        "cheapest_on_one_device": min(one_device, key=one_device.get),
        "final_layers": [layer.name for layer in result.model.layers],
        "channel_params": stages[2].notes["params"],
        "widths": stages[2].notes["widths"],
        "distinct_values": stages[3].notes["distinct_values"],
        "ptq_agreement": stages[4].agreement,
        "ptq_max_abs_diff": stages[4].max_abs_diff,
        "ptq_margin": stages[4].mean_top1_margin,
        "channels": recorded["channels"],
        "clusters": recorded["clusters"],
    }

    def n_by_m(distribution):
        keras.utils.set_random_seed(0)
        return kstruct.optimize(
            _residual_cnn(), "prune(2:4) + distill(epochs=1)", train_data=train, validation_data=validation,
            epochs=1, batch_size=32, distribution=distribution, verbose=0,
        )

    result = n_by_m(strategy)
    trained = result.model  # factorize fine-tunes it (a model that predicts, not one at chance)
    masks = dict(recorded["masks"])  # before the one-device run records its own
    groups = []
    for layer in result.model.layers:
        if layer.name in ("res1_conv", "res2_conv", "hidden", "out"):
            kernel = np.moveaxis(keras.ops.convert_to_numpy(layer.kernel), -2, -1)  # inputs last: (..., in)
            groups.append(np.count_nonzero(kernel.reshape(-1, 4), axis=1))
    groups = np.concatenate(groups)
    stages, alone = result.report.stages, n_by_m(None).report.stages
    # unwrapped: auto's trials prune channels too, and would record over these runs' state
    channels_step.strip_channels, cluster_step.strip, prune_step.strip = originals
    return {
        "structure": structure,
        "n_by_m": {
            "replicas": result.report.settings["replicas"],
            "variables_mirrored": mirrored(result.model),
            "same_on_replicas": same_on_replicas(result.model),
            "masks": masks,
            "pruned": {k: v for k, v in stages[1].notes["pruned_layers"].items() if v},
            "groups": int(groups.size),
            "groups_with_2_of_4": int(np.sum(groups == 2)),
            "distill_history": stages[2].notes["history"],
            "sparsity": stages[-1].sparsity,
            "accuracy": stages[-1].keras_accuracy,
            "one_device": {"sparsity": alone[-1].sparsity, "accuracy": alone[-1].keras_accuracy},
        },
        "factorize": _factorize(strategy, trained, mirrored, same_on_replicas, train, validation),
        "auto": _auto(strategy, mirrored, same_on_replicas, train, validation),
        "search": _search(strategy, mirrored, same_on_replicas, train, validation),
    }


def _factorize(strategy, model, mirrored, same_on_replicas, train, validation) -> dict:
    """factorize(0.5) of the Dense layer `hidden` (288 -> 16: rank 8) of the model prune(2:4) + distill
    returned, fine-tuned 1 epoch under `strategy`."""
    import keras

    import kstruct

    keras.utils.set_random_seed(0)
    result = kstruct.optimize(
        model, "factorize(0.5, layers='hidden')", train_data=train, validation_data=validation, epochs=1,
        batch_size=32, target="float32", distribution=strategy, verbose=0,
    )
    stages = result.report.stages
    factors = [layer for layer in result.model.layers if layer.name.startswith("hidden")]
    return {
        "replicas": result.report.settings["replicas"],
        "variables_mirrored": mirrored(result.model),
        "same_on_replicas": same_on_replicas(result.model),
        "factorized": stages[1].notes["factorized"],
        "factors": {layer.name: list(layer.kernel.shape) for layer in factors},
        "params": stages[1].notes["params"],
        "loss": stages[1].notes["history"]["loss"],
        "accuracy": [stages[0].keras_accuracy, stages[-1].keras_accuracy],
        "agreement": stages[-1].agreement,
    }


def _auto(strategy, mirrored, same_on_replicas, train, validation) -> dict:
    """auto with 2 random trials of 1 epoch under `strategy`, a params budget every chain meets; each
    trial's chain recorded as it finishes: the strategy it ran under and where its model's variables are."""
    import keras
    import tensorflow as tf

    import kstruct
    from kstruct.auto.run import AutoSearch

    trials, run_chain = [], AutoSearch._run_chain

    def run_and_record(self, plan):
        model, blob, epochs = run_chain(self, plan)
        trials.append({"replicas": tf.distribute.get_strategy().num_replicas_in_sync, "mirrored": mirrored(model),
                       "same_on_replicas": same_on_replicas(model), "epochs": epochs})
        return model, blob, epochs

    AutoSearch._run_chain = run_and_record
    keras.utils.set_random_seed(0)
    model = _residual_cnn()
    result = kstruct.optimize(
        model, f"auto(params={model.count_params()}, max_accuracy_drop=1.0, trials=2, epochs=1, tuner='random', seed=1)",
        train_data=train, validation_data=validation, target="float32", distribution=strategy, verbose=0,
    )
    AutoSearch._run_chain = run_chain
    notes = result.report.stages[1].notes["auto"]
    return {
        "replicas": result.report.settings["replicas"],
        "variables_mirrored": mirrored(result.model),
        "same_on_replicas": same_on_replicas(result.model),
        "strategy": result.strategy,
        "best": notes["best_trial"],
        "rows": [{"status": row["status"], "strategy": row["strategy"]} for row in notes["trials"]],
        "trained": trials,
        "params": result.model.count_params(),
    }



def _search(strategy, mirrored, same_on_replicas, train, validation) -> dict:
    """search with 2 random trials of 1 epoch under `strategy`, a params budget the original meets;
    each model Keras Tuner builds recorded: the strategy it was built under, where its variables are."""
    import keras
    import tensorflow as tf

    import kstruct
    from kstruct.search.tuner import _BudgetMixin

    built, try_build = [], _BudgetMixin._try_build

    def build_and_record(self, hp):
        model = try_build(self, hp)
        built.append({"replicas": tf.distribute.get_strategy().num_replicas_in_sync, "mirrored": mirrored(model)})
        return model

    _BudgetMixin._try_build = build_and_record
    keras.utils.set_random_seed(0)
    model = _residual_cnn()
    result = kstruct.optimize(
        model, f"search(trials=2, params={model.count_params()}, epochs=1, plot=False)", train_data=train,
        validation_data=validation, target="float32", distribution=strategy, verbose=0,
    )
    _BudgetMixin._try_build = try_build
    notes = result.report.stages[1].notes
    return {
        "replicas": result.report.settings["replicas"],
        "variables_mirrored": mirrored(result.model),
        "same_on_replicas": same_on_replicas(result.model),
        "trials": len(notes["trials"]),
        "best_params": notes["best_trial"]["params"],
        "budget": model.count_params(),
        "params": result.model.count_params(),
        "built": built,
    }

if __name__ == "__main__":
    # Run as a script, this folder comes first on sys.path, and tests/tflite_export would hide the package.
    sys.path[:] = [entry for entry in sys.path if pathlib.Path(entry or ".").resolve() != pathlib.Path(__file__).parent]
    print(json.dumps(_run_two_replicas()))
