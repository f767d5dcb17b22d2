"""The data a pruning run is made of: units, blocks, input statistics, allocations, results.

Everything here is plain data (attrs). Objects that hold a live ``nn.Module`` compare by
identity (``eq=False``); the rest are frozen values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import torch
from torch import nn

UNSTRUCTURED = "unstructured"
"""The granularity that prunes entries of units (the others are group kinds)."""
LAYERS = "layers"
"""The granularity that removes whole blocks (``secateurs.depth``), not components inside them."""
HIDDEN = "hidden"
"""The granularity that narrows the residual stream of the whole model (``secateurs.width``):
one group whose components are the hidden channels, shared by every block."""


@attrs.frozen(eq=False)
class Unit:
    """One prunable parameter of a model.

    ``name`` is the qualified module path (``model.layers.0.attention.query``); the pruned
    tensor is ``getattr(module, param)``. Rows are ``weight[r]`` (one output unit: its
    incoming weights, flattened for convolutions); 1-D tensors are a single row.
    ``role`` is the architecture role the adapter gives it (``query``, ``mlp-in``, ``conv``...).
    ``name`` is unique within a run; when it is not the module path (units made from
    parameter names, one per tensor), ``module_path`` holds the module path.

    ``transposed``: the parameter is stored ``[in, out]`` (``transformers.pytorch_utils.Conv1D``);
    ``weight`` is then its transpose, a view, so that every user sees ``[out, in]`` rows and
    in-place edits of ``weight`` reach the parameter. ``parameter`` is the stored tensor
    itself; ``orient`` turns a tensor of the parameter's layout into ``weight``'s.
    """

    name: str
    module: nn.Module
    param: str = "weight"
    role: str = ""
    module_path: str | None = None
    transposed: bool = False

    @property
    def parameter(self) -> torch.Tensor:
        """The tensor as the module stores it (``weight`` before orientation)."""
        return getattr(self.module, self.param)

    @property
    def weight(self) -> torch.Tensor:
        """The pruned tensor, rows first (``[out, in]``); a view of ``parameter``."""
        return self.orient(self.parameter)

    def orient(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor``, laid out as ``parameter`` (a state-dict entry of it), in ``weight``'s
        orientation (a view)."""
        return tensor.T if self.transposed else tensor

    @property
    def qualified_name(self) -> str:
        """The state-dict key of the pruned tensor."""
        path = self.name if self.module_path is None else self.module_path
        return f"{path}.{self.param}" if path else self.param

    @property
    def shape(self) -> torch.Size:
        return self.weight.shape

    @property
    def rows(self) -> int:
        return 1 if self.weight.dim() == 1 else self.weight.shape[0]

    @property
    def row_width(self) -> int:
        return self.weight.numel() // self.rows

    def as_rows(self, tensor: torch.Tensor | None = None) -> torch.Tensor:
        """``tensor`` (default: the weight) viewed as ``[rows, row_width]``."""
        t = self.weight if tensor is None else tensor
        return t.reshape(self.rows, self.row_width)


@attrs.frozen(eq=False)
class ParamSlice:
    """The span of ``getattr(module, param)`` along ``dim`` that a group's components share.

    The span is entries ``[start, start + length)`` (``length=None``: to the end of the
    dimension), so one fused tensor can hold several spans: a fused query/key/value weight gives a
    head's group three slices, at ``start`` 0, ``dim`` and ``2 * dim``.
    """

    module: nn.Module
    param: str
    dim: int
    start: int = 0
    length: int | None = None

    @property
    def tensor(self) -> torch.Tensor:
        return getattr(self.module, self.param)

    @property
    def span(self) -> int:
        """Number of entries along ``dim`` in this slice (before anything is removed)."""
        full = self.tensor.shape[self.dim]
        return full - self.start if self.length is None else self.length


@attrs.frozen(eq=False)
class Group:
    """A set of structured components pruned together (attention heads, MLP neurons,
    conv output channels).

    Component ``c`` owns entries ``[start + c * width, start + (c + 1) * width)`` along
    ``slice.dim`` of every coupled slice, where ``width = slice.span // size`` (a head owns
    ``head_dim`` rows of q/k/v; a neuron one row of the MLP's input layer and one column of its output layer).
    Several slices may lie in one tensor (fused query/key/value): index them all before removing.
    ``kind`` is ``"heads"``, ``"neurons"`` or ``"channels"``.
    """

    name: str
    kind: str
    size: int
    slices: tuple[ParamSlice, ...]
    meta: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(eq=False)
class Block:
    """Modules that run together; the granularity of layer-by-layer processing.

    ``module`` is called with the captured inputs of the previous block (its positional
    and keyword arguments, as the model's own forward passed them).

    ``stages``: unit names in data-flow order, one tuple per step of sequential pruning
    (SparseGPT's ``true_sequential``: a stage's inputs are re-collected after the earlier
    stages were pruned); units of no stage go first. Empty: one step. The stages also
    say which layer consumes which one's outputs (``consumers``).
    """

    name: str
    index: int
    module: nn.Module
    units: tuple[Unit, ...]
    groups: tuple[Group, ...] = ()
    stages: tuple[tuple[str, ...], ...] = ()

    def targets(self, granularity: str) -> list[Unit] | list[Group]:
        """What a run at ``granularity`` prunes here: the units (``"unstructured"``) or the
        groups of that kind."""
        if granularity == UNSTRUCTURED:
            return list(self.units)
        return [g for g in self.groups if g.kind == granularity]

    def consumers(self) -> dict[str, str]:
        """Unit name → the unit that consumes its outputs, from the stages: every unit of a
        stage feeds the first unit of the next stage (attention inputs → attention output
        → first MLP input → MLP output); units of the last stage have none in the block."""
        return {name: later[0] for stage, later in zip(self.stages, self.stages[1:]) if later for name in stage}


@attrs.define(eq=False)
class InputStats:
    """Statistics of the inputs a unit saw during calibration.

    ``sq_norm[j]``: mean over samples of the sum over tokens (and spatial positions) of
    ``x_j ** 2`` (Wanda's ``scaler_row``). ``hessian``: ``(2 / nsamples) * sum x x^T`` over
    all tokens (SparseGPT's H), present only when requested. Both float32 on the unit's
    device.
    """

    sq_norm: torch.Tensor
    nsamples: int = 0
    ntokens: int = 0
    hessian: torch.Tensor | None = None


@attrs.frozen
class ModelFacts:
    """What a model's own files say before any weight is read (``DescribingAdapter.describe``):
    ``source`` names the model in messages; ``max_positions`` is its maximum sequence length
    (``None``: it records none); ``layers`` is its number of blocks (``None``: unknown);
    ``sizes`` are its config's integer fields by name (``hidden_size``, ``num_attention_heads``...;
    empty: unknown)."""

    source: str
    max_positions: int | None = None
    layers: int | None = None
    sizes: Mapping[str, int] = attrs.field(factory=dict, eq=False)


@attrs.frozen(eq=False)
class RunPlan:
    """A run as its recipe describes it, before the model is loaded: the target
    ``sparsity``, the ``granularity``, the scorer and applier built, and whether calibration
    batches will be given (``calibrated``). Checks that need nothing more
    (``CheckingAllocator.check``) run on it before any weight is read."""

    sparsity: float
    granularity: str
    scorer: Any
    applier: Any
    calibrated: bool


@attrs.frozen
class UnitAllocation:
    """Target sparsity of one unit: ``sparsity`` for the whole unit, or, when ``rows`` is
    given, one ratio per row (their mean is ``sparsity``)."""

    sparsity: float
    rows: torch.Tensor | None = attrs.field(default=None, eq=False)

    def row_sparsity(self, n_rows: int) -> torch.Tensor:
        """One sparsity ratio per row (float64 on CPU)."""
        if self.rows is not None:
            return self.rows.detach().to("cpu", torch.float64)
        return torch.full((n_rows,), float(self.sparsity), dtype=torch.float64)


Allocation = Mapping[str, UnitAllocation]
"""Unit name → its target sparsity."""


@attrs.frozen
class UnitReport:
    """What happened to one unit."""

    name: str
    shape: tuple[int, ...]
    numel: int
    pruned: int
    target_sparsity: float

    @property
    def sparsity(self) -> float:
        return self.pruned / self.numel if self.numel else 0.0


@attrs.define
class PruneResult:
    """The outcome of a pruning session.

    ``units`` lists every pruned unit (or structured group); ``pruned`` counts the entries
    (components, for groups) not kept: zeroed, removed, or restored for KEN.
    ``params_total`` counts all parameters of the model before the run, ``params_pruned``
    the parameters not kept.
    ``timings`` are wall seconds per phase; ``records`` is free-form data that plugins
    (allocators that search, scorers) want in the report.
    """

    units: list[UnitReport] = attrs.field(factory=list)
    params_total: int = 0
    params_pruned: int = 0
    timings: dict[str, float] = attrs.field(factory=dict)
    records: dict[str, Any] = attrs.field(factory=dict)
    recipe: dict[str, Any] = attrs.field(factory=dict)

    @property
    def params_kept(self) -> int:
        return self.params_total - self.params_pruned

    @property
    def sparsity(self) -> float:
        """Fraction of entries of the pruned units that were pruned."""
        total = sum(u.numel for u in self.units)
        return sum(u.pruned for u in self.units) / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "sparsity": self.sparsity,
            "params_total": self.params_total,
            "params_pruned": self.params_pruned,
            "params_kept": self.params_kept,
            "timings": self.timings,
            "units": [
                {
                    "name": u.name,
                    "shape": list(u.shape),
                    "numel": u.numel,
                    "pruned": u.pruned,
                    "sparsity": u.sparsity,
                    "target_sparsity": u.target_sparsity,
                }
                for u in self.units
            ],
            "records": self.records,
            "recipe": self.recipe,
        }
