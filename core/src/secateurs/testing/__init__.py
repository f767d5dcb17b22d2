"""A test kit for adapter and plugin authors, shipped with the core.

- ``tiny_model()``: a seeded ``TinyMLP`` with its adapter (``TinyMLPAdapter``: residual
  MLP blocks, unstructured units and ``"neurons"`` groups), ``GaussianBatches`` (a
  calibration source) and ``OutputAgreement`` (an evaluator): the real pipeline in
  milliseconds; ``TinyPlugin`` registers them by name (``tiny-mlp``, ``gaussian``,
  ``output-agreement``) for recipes and the CLI.
- ``check_scorer`` / ``check_allocator`` / ``check_applier``: a part satisfies its
  protocol (``assert_implements``, optional members included) and works in a pipeline run.
- ``propagation_error(loaded, batches)``: the invariant every adapter must satisfy.
- ``quiet_spec(...)``: a ``PruneSpec`` of registered parts without progress bars.

See ``docs/plugins.md`` ("Testing a plugin").
"""

from secateurs.testing.checks import Where, assert_implements, check_allocator, check_applier, check_scorer, quiet_spec
from secateurs.testing.invariants import model_block_inputs, pipeline_block_inputs, propagation_error
from secateurs.testing.toy import GaussianBatches, OutputAgreement, TinyMLP, TinyMLPAdapter, TinyPlugin, tiny_model

__all__ = [
    "GaussianBatches",
    "OutputAgreement",
    "TinyMLP",
    "TinyMLPAdapter",
    "TinyPlugin",
    "Where",
    "assert_implements",
    "check_allocator",
    "check_applier",
    "check_scorer",
    "model_block_inputs",
    "pipeline_block_inputs",
    "propagation_error",
    "quiet_spec",
    "tiny_model",
]
