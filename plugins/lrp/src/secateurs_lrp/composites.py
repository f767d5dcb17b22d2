"""LRP composites: one rule per depth group, or a built-in zennit composite by name.

A composite is described by plain data (``CompositeSpec``, JSON-able) so it can be
tuned, saved and named in a recipe::

    {"low": {"rule": "gamma", "gamma": 0.25}, "mid": "epsilon", "high": "epsilon",
     "fc": {"rule": "epsilon", "epsilon": 1e-6}, "softmax": "attnlrp"}
    {"zennit": "EpsilonPlus", "softmax": "cp"}

Depth groups: the conv/linear layers of the classifier head (``head``, ``pre_logits``,
``fc``, ``classifier``) are ``fc``; every other conv/linear layer, in execution order, is
``low``, ``mid`` or ``high`` by which third of the feature layers it falls in. Whatever
the rules, relevance is conserved through the parts that have no choice: residual sums
and average pools (zennit ``Norm``), activations, BatchNorm after merging and
LayerScale (``Pass``), LayerNorm with a constant std (ε).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import zennit.composites
import zennit.rules
import zennit.types
from torch import nn
from zennit.core import Composite, Hook
from zennit.layer import Sum

from secateurs.errors import SecateursError
from secateurs_lrp.zoos import added_rule_layers, canonizers_for, gathered

GROUPS = ("low", "mid", "high", "fc")
FC_ROOTS = frozenset({"head", "pre_logits", "fc", "classifier", *gathered("FC_ROOTS")})
RULES: dict[str, dict[str, float]] = {
    "epsilon": {"epsilon": 1e-6},
    "gamma": {"gamma": 0.25},
    "zplus": {},
    "alphabeta": {"alpha": 2.0, "beta": 1.0},
}
"""Rule name → its parameters and their defaults."""

_ZENNIT_NEEDS_BOUNDS = {"epsilon_gamma_box"}

PASS_THROUGH: tuple[type, ...] = gathered("PASS_THROUGH")
"""Modules that scale elementwise: relevance passes them unchanged (zennit ``Pass``)."""


def zennit_composites() -> dict[str, type]:
    """Built-in zennit composites usable by name (class name or zennit's snake name)."""
    out = {}
    for key, cls in zennit.composites.COMPOSITES.items():
        if key not in _ZENNIT_NEEDS_BOUNDS:
            out[cls.__name__] = cls
            out[key] = cls
    return out


@attrs.frozen
class RuleSpec:
    """One LRP rule with its parameters (defaults from ``RULES``)."""

    rule: str
    params: Mapping[str, float] = attrs.field(factory=dict)

    @classmethod
    def parse(cls, value: Any, where: str) -> RuleSpec:
        if isinstance(value, RuleSpec):
            return value
        if isinstance(value, str):
            value = {"rule": value}
        if not isinstance(value, Mapping) or not isinstance(value.get("rule"), str):
            raise SecateursError(f"composite {where}: give a rule name or a table with `rule` (one of {', '.join(RULES)})")
        name = value["rule"].lower().replace("_", "").replace("-", "")
        if name not in RULES:
            raise SecateursError(f"composite {where}: unknown rule {value['rule']!r}; valid rules: {', '.join(RULES)}")
        params = {k: v for k, v in value.items() if k != "rule"}
        unknown = sorted(set(params) - set(RULES[name]))
        if unknown:
            valid = ", ".join(RULES[name]) or "none"
            raise SecateursError(f"composite {where}: rule {name!r} has no parameter {unknown[0]!r} (parameters: {valid})")
        for key, number in params.items():
            if not isinstance(number, int | float) or number < 0:
                raise SecateursError(f"composite {where}: {name}.{key} must be a non-negative number, got {number!r}")
        return cls(name, {**RULES[name], **{k: float(v) for k, v in params.items()}})

    def hook(self, zero_params: list[str] | None) -> Hook:
        p = self.params
        if self.rule == "epsilon":
            return zennit.rules.Epsilon(epsilon=p["epsilon"], zero_params=zero_params)
        if self.rule == "gamma":
            return zennit.rules.Gamma(gamma=p["gamma"], zero_params=zero_params)
        if self.rule == "zplus":
            return zennit.rules.ZPlus(zero_params=zero_params)
        return zennit.rules.AlphaBeta(alpha=p["alpha"], beta=p["beta"], zero_params=zero_params)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, **self.params}


def _rule_field(group: str):
    return attrs.field(default=RuleSpec("epsilon", RULES["epsilon"]), converter=lambda v: RuleSpec.parse(v, group))


def _softmax(_inst, _attr, value: str) -> None:
    if value not in ("attnlrp", "cp"):
        raise SecateursError(f"composite softmax rule {value!r} unknown; valid: attnlrp, cp")


@attrs.frozen
class CompositeSpec:
    """A composite: a rule per depth group (or ``zennit``: a built-in composite name),
    the softmax rule for attention (``attnlrp`` or ``cp``), and ``zero_bias`` (rules
    ignore biases, so relevance is conserved exactly through linear layers)."""

    low: RuleSpec = _rule_field("low")
    mid: RuleSpec = _rule_field("mid")
    high: RuleSpec = _rule_field("high")
    fc: RuleSpec = _rule_field("fc")
    softmax: str = attrs.field(default="attnlrp", validator=_softmax)
    zero_bias: bool = False
    zennit: str | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.zero_bias, bool):
            raise SecateursError(f"composite zero_bias must be true or false, got {self.zero_bias!r}")
        if self.zennit is not None and (not isinstance(self.zennit, str) or self.zennit not in zennit_composites()):
            valid = sorted(n for n in zennit_composites() if n[0].isupper())
            raise SecateursError(f"unknown zennit composite {self.zennit!r}; valid: {', '.join(valid)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompositeSpec:
        if not isinstance(data, Mapping):
            raise SecateursError(
                f"a composite must be a table of depth-group rules (e.g. {{\"low\": \"gamma\"}}), got {data!r:.60}"
            )
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SecateursError(f"unknown composite key {unknown[0]!r}; keys: {', '.join(sorted(known))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"softmax": self.softmax, "zero_bias": self.zero_bias}
        if self.zennit is not None:
            return {"zennit": self.zennit, **out}
        return {g: getattr(self, g).to_dict() for g in GROUPS} | out

    def build(self, model: nn.Module) -> Composite:
        """A zennit composite for ``model`` (with the canonizers it needs)."""
        zero = ["bias"] if self.zero_bias else None
        canonizers = canonizers_for(model, self.softmax)
        extras = _structural_map(zero)
        if self.zennit is not None:
            cls = zennit_composites()[self.zennit]
            kwargs: dict[str, Any] = {"layer_map": extras, "canonizers": canonizers}
            if "zero_params" in cls.__init__.__code__.co_varnames:
                kwargs["zero_params"] = zero
            return cls(**kwargs)
        groups = depth_groups(model)
        hooks = {g: getattr(self, g).hook(zero) for g in GROUPS}
        return _DepthComposite(extras, {name: hooks[g] for name, g in groups.items()}, canonizers)


def _structural_map(zero_params: list[str] | None) -> list[tuple[tuple[type, ...], Hook]]:
    """Rules for the layers that are not a choice: they conserve relevance."""
    activations = tuple(t for t in zennit.types.Activation.__subclass__ if t is not nn.MultiheadAttention)
    return [
        ((nn.LayerNorm,), zennit.rules.Epsilon(epsilon=1e-6, zero_params=zero_params)),
        (PASS_THROUGH, zennit.rules.Pass()),
        (activations, zennit.rules.Pass()),
        ((Sum,), zennit.rules.Norm()),
        (tuple(zennit.types.AvgPool.__subclass__), zennit.rules.Norm()),
        (tuple(zennit.types.BatchNorm.__subclass__), zennit.rules.Pass()),
    ]


class _DepthComposite(Composite):
    """Structural rules by type, then the depth group's rule by module name."""

    def __init__(self, structural, by_name: Mapping[str, Hook], canonizers) -> None:
        self.structural, self.by_name = structural, dict(by_name)
        super().__init__(module_map=self._map, canonizers=canonizers)

    def _map(self, ctx, name: str, module: nn.Module) -> Hook | None:
        hook = next((h for types, h in self.structural if isinstance(module, types)), None)
        return hook if hook is not None else self.by_name.get(name)


def rule_layers(model: nn.Module) -> list[str]:
    """Names of the conv/linear layers an LRP rule is chosen for, in module order (with
    the projections the canonizers add to attentions, ``zoos.added_rule_layers``)."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, zennit.types.Linear):
            out.append(name)
        out += added_rule_layers(name, module)
    return out


def depth_groups(model: nn.Module) -> dict[str, str]:
    """Rule layer name → ``low`` / ``mid`` / ``high`` / ``fc`` (see module docstring)."""
    names = rule_layers(model)
    features = [n for n in names if n.split(".")[0] not in FC_ROOTS]
    out = {n: "fc" for n in names if n.split(".")[0] in FC_ROOTS}
    for index, name in enumerate(features):
        out[name] = ("low", "mid", "high")[min(2, index * 3 // max(len(features), 1))]
    return out


KNOWN_CONTAINERS: tuple[type, ...] = (nn.Sequential, nn.ModuleList, nn.ModuleDict, *gathered("CONTAINERS"))
"""Modules whose own forward only chains their children (or is made explicit by a
canonizer); any other module with children hides operations no rule covers."""

TRANSPARENT: tuple[type, ...] = (
    nn.Identity,
    nn.Dropout,
    nn.Flatten,
    *zennit.types.MaxPool.__subclass__,
    *gathered("TRANSPARENT"),
)
"""Leaf modules relevance passes through correctly as a plain gradient."""


def unhandled_layers(model: nn.Module, composite: Composite) -> list[str]:
    """``"name (Type)"`` of every module of the (canonized) ``model`` that neither the
    composite's rules nor the known-safe modules cover."""
    ctx: dict = {}
    out = []
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention) and not hasattr(module, "lrp_probe"):
            out.append(f"{name} ({type(module).__name__})")
            continue
        if any(True for _ in module.children()):
            if not isinstance(module, KNOWN_CONTAINERS):
                out.append(f"{name or '<model>'} ({type(module).__name__})")
            continue
        if isinstance(module, TRANSPARENT) or composite.module_map(ctx, name, module) is not None:
            continue
        out.append(f"{name} ({type(module).__name__})")
    return out

