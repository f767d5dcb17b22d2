"""Factories named by reference, imported only when a part is first built.

A plugin may ``register(name, "package.module:attribute")`` (or ``lazy(ref, *args)`` to
bind leading arguments, as ``functools.partial`` would) instead of passing the class: its
plugin module then imports nothing heavy, so listing plugins and ``secateurs --help`` stay
fast, and the part's module (torch, timm, ...) is imported the first time the part is used.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

import attrs


@attrs.frozen
class Lazy:
    """``module:attribute``, with ``args`` bound first; ``load()`` imports it."""

    ref: str = attrs.field()
    args: tuple[Any, ...] = ()

    @ref.validator
    def _check(self, attribute: attrs.Attribute, value: str) -> None:
        module, sep, name = value.partition(":")
        if not (sep and module and name):
            raise ValueError(f"factory reference {value!r} is not of the form 'package.module:attribute'")

    def load(self) -> Callable[..., Any]:
        """The referenced object (``functools.partial`` of it when ``args`` are bound);
        raises what importing or looking it up raises."""
        module, _, name = self.ref.partition(":")
        target: Any = importlib.import_module(module)
        for part in name.split("."):
            target = getattr(target, part)
        return functools.partial(target, *self.args) if self.args else target


def lazy(ref: str, *args: Any) -> Lazy:
    """A factory reference for ``register``: ``ref`` is ``"package.module:attribute"``;
    ``args`` are passed first when the part is built."""
    return Lazy(ref, args)
