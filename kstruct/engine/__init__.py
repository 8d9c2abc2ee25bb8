"""The floor every technique stands on: the Step contract, the context a step gets (`StepContext`),
training-data preparation and checks, task detection, parameter counting, training callbacks and
the figures' house style.

A technique imports `kstruct.engine` and `kstruct._graph`, never another technique; the report,
the strategy grammar, the pipeline and the CLI sit above (`docs/architecture.md`).
Nothing is imported here, so `import kstruct.engine.step` stays free of Keras.
"""
