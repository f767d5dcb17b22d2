"""What the adapter sees in a model, and how pruned it is (``secateurs inspect MODEL``).

``describe(loaded)`` returns plain data (the adapter, every block with its prunable units
— shape, parameters, current sparsity — and structured groups — components, how many
are entirely zero — plus the parameters outside the units), ``render`` turns it into
text; the command (``secateurs.cli``) prints one or the other (``--json``).
"""

from __future__ import annotations

from typing import Any

import torch

from secateurs.protocols import LoadedModel
from secateurs.structured import component_view
from secateurs.types import Block, Group, Unit


def _unit(unit: Unit) -> dict[str, Any]:
    w = unit.weight.detach()
    zeros = int((w == 0).sum())
    return {
        "name": unit.name,
        "role": unit.role,
        "shape": list(w.shape),
        "params": w.numel(),
        "zeros": zeros,
        "sparsity": zeros / w.numel() if w.numel() else 0.0,
    }


def _group(group: Group) -> dict[str, Any]:
    nonzero = torch.stack([component_view(group, s).ne(0).any(1) for s in group.slices]).any(0)
    return {
        "name": group.name,
        "kind": group.kind,
        "components": group.size,
        "zero_components": int((~nonzero).sum()),
        "meta": dict(group.meta),
    }


def _storage(tensor: torch.Tensor) -> int:
    """Identifies the memory a tensor lives in: a unit that views part of a parameter (an
    expert of a fused 3-D tensor, a transposed ``Conv1D`` weight) counts the parameter as
    pruned, not again as "other" (tensors without storage, such as meta: by identity)."""
    return tensor.untyped_storage().data_ptr() or id(tensor)


def _block(block: Block, pruned: set[int]) -> dict[str, Any]:
    return {
        "name": block.name,
        "index": block.index,
        "units": [_unit(u) for u in block.units],
        "groups": [_group(g) for g in block.groups],
        "other_params": sum(p.numel() for p in block.module.parameters() if _storage(p) not in pruned),
    }


def describe(loaded: LoadedModel) -> dict[str, Any]:
    """Plain-data description of ``loaded`` as its adapter sees it (see module docstring)."""
    model = loaded.model
    blocks = loaded.adapter.blocks(model)
    pruned = {_storage(u.parameter) for b in blocks for u in b.units}
    in_blocks = {_storage(p) for b in blocks for p in b.module.parameters()} | pruned
    outside: dict[str, int] = {}
    for name, p in model.named_parameters():
        if _storage(p) not in in_blocks:
            owner = name.rpartition(".")[0] or name
            outside[owner] = outside.get(owner, 0) + p.numel()
    described = [_block(b, pruned) for b in blocks]
    unit_params = sum(u["params"] for b in described for u in b["units"])
    unit_zeros = sum(u["zeros"] for b in described for u in b["units"])
    return {
        "source": loaded.source,
        "adapter": loaded.adapter.name,
        "model": type(model).__name__,
        "params": sum(p.numel() for p in model.parameters()),
        "unit_params": unit_params,
        "unit_sparsity": unit_zeros / unit_params if unit_params else 0.0,
        "blocks": described,
        "not_pruned": [{"module": k, "params": v} for k, v in outside.items()],
    }


def render(report: dict[str, Any]) -> str:
    """Human-readable text of a ``describe`` report."""
    lines = [
        f"model    {report['source']} ({report['model']})",
        f"adapter  {report['adapter']}",
        f"params   {report['params']:,} ({report['unit_params']:,} in prunable units, "
        f"{report['unit_sparsity']:.2%} of them zero)",
        f"blocks   {len(report['blocks'])}",
    ]
    for block in report["blocks"]:
        lines.append(f"\n[{block['index']}] {block['name']}  (+{block['other_params']:,} params not pruned)")
        for u in block["units"]:
            shape = "x".join(map(str, u["shape"]))
            lines.append(
                f"    {u['name']:<48} {u['role']:<16} {shape:>12} {u['params']:>12,}  sparsity {u['sparsity']:.2%}"
            )
        for g in block["groups"]:
            lines.append(
                f"    group {g['kind']:<9} {g['name']:<40} {g['components']:>5} components, "
                f"{g['zero_components']} all-zero"
            )
    lines.append("\nnot pruned (outside the blocks):")
    lines += [f"    {o['module']:<48} {o['params']:>12,}" for o in report["not_pruned"]]
    return "\n".join(lines)
