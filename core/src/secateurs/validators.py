"""attrs validators for the parameters of plugin parts, and the recipe's sparsity check.

Each validator has attrs' signature ``(instance, attribute, value)`` and raises
``ValueError`` naming the parameter (``Registry.create`` turns it into a
``SecateursError`` naming the part). Wrap one in ``attrs.validators.optional`` to also
accept ``None``::

    nsamples: int = attrs.field(default=128, validator=positive_int)
    limit: int | None = attrs.field(default=None, validator=optional(positive_int))
"""

from __future__ import annotations

from typing import Any

import attrs
from attrs.validators import optional

from secateurs.errors import SecateursError

__all__ = ["check_sparsity", "in_open_unit_interval", "non_negative", "optional", "positive", "positive_int"]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive_int(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """An ``int`` (not a ``bool``) greater than 0."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive integer, got {value!r}")


def positive(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A number greater than 0."""
    if not _is_number(value) or value <= 0:
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


def non_negative(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A number greater than or equal to 0."""
    if not _is_number(value) or value < 0:
        raise ValueError(f"{attribute.name} must be a number >= 0, got {value!r}")


def in_open_unit_interval(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    """A number strictly between 0 and 1."""
    if not _is_number(value) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{attribute.name} must be a fraction in (0, 1), got {value!r}")


def check_sparsity(sparsity: Any) -> float:
    """``sparsity`` as a float; a ``SecateursError`` unless it is a number in [0, 1)."""
    if not _is_number(sparsity) or not 0.0 <= float(sparsity) < 1.0:
        raise SecateursError(f"sparsity must be a number in [0, 1), got {sparsity!r}")
    return float(sparsity)
