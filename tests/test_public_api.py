"""The public names, written out: changing what users can import is a deliberate act.

A new public name (or a removed one) fails this test until the snapshot below is
updated in the same change, which makes the change visible in review.
"""

import importlib

import pytest

PUBLIC = {
    "kstruct": [
        "Cluster",
        "DataError",
        "Distill",
        "DistillationError",
        "KNOWN_STEPS",
        "KstructError",
        "OptimizationResult",
        "OutputExistsError",
        "PTQ",
        "Prune",
        "PruningError",
        "QAT",
        "Report",
        "Search",
        "StageReport",
        "Step",
        "StepResult",
        "Strategy",
        "StrategyError",
        "UnsupportedModelError",
        "clustering",
        "data",
        "distillation",
        "errors",
        "models",
        "optimize",
        "outputs",
        "plots",
        "pruning",
        "quantization",
        "register_step",
        "search",
    ],
    "kstruct.pruning": [
        "ConstantSparsity",
        "PolynomialDecay",
        "PruneWrapper",
        "PruningSchedule",
        "SparsityReport",
        "never_updated",
        "prune",
        "sparsity",
        "strip",
    ],
    "kstruct.quantization": [
        "FakeQuant",
        "FloatPassthrough",
        "PTQ",
        "QAT",
        "QuantizationReport",
        "QuantizationScheme",
        "QuantizeActivation",
        "QuantizeOutput",
        "QuantizeRescaling",
        "QuantizeWrapper",
        "folded_bias",
        "folded_scale",
        "quantization_report",
        "quantize",
        "quantize_weight",
    ],
    "kstruct.clustering": [
        "CLUSTERABLE_LAYERS",
        "Cluster",
        "ClusterWrapper",
        "INITS",
        "KERNEL_VALUES_ATTRIBUTE",
        "cluster",
        "distinct_values",
        "strip",
    ],
    "kstruct.search": [
        "BUDGET_KEYS",
        "BehindBestStopping",
        "Budget",
        "BudgetError",
        "BudgetedBayesianOptimization",
        "BudgetedHyperband",
        "BudgetedRandomSearch",
        "Measurement",
        "NATIVE_ACTIVATIONS",
        "Search",
        "SearchError",
        "SearchResult",
        "SearchSpace",
        "TUNER_NAMES",
        "TrialRecord",
        "native_activations",
        "pareto_front",
        "plot_pareto",
        "run",
        "space",
    ],
    "kstruct.distillation": [
        "ClassScoreDistillation",
        "DEFAULT_ALPHA",
        "DEFAULT_TEMPERATURE",
        "Distill",
        "check_teacher",
        "distiller",
    ],
    "kstruct.plots": [
        "FIGURES",
        "figures",
        "layers_figure",
        "save_figures",
        "stages_figure",
        "training_figure",
    ],
    "tflite_export": [
        "Analysis",
        "BenchmarkResult",
        "CompatibilityError",
        "EdgeTpuCpuFallbackWarning",
        "ExportError",
        "GpuVerdict",
        "OutputDiff",
        "TARGETS",
        "TARGET_TABLE",
        "Target",
        "TargetCheck",
        "TensorInfo",
        "Verification",
        "analyze",
        "benchmark",
        "check",
        "convert",
        "evaluate",
        "paired_outputs",
        "predict",
        "read_model",
        "run_on_gpu",
        "verify",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_are_the_snapshot(module):
    assert sorted(importlib.import_module(module).__all__) == PUBLIC[module]


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_public_name_resolves(module):
    imported = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(imported, name)]
    assert not missing, f"{module} lists names it does not define: {missing}"
