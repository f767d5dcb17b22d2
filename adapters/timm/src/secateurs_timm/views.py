"""Blocks made of modules that timm keeps side by side rather than in one container.

A VGG stage (conv, BatchNorm, ReLU, pool) or a ResNet stem is a run of a model's modules
with no module of its own. ``view`` wraps such a run in an ``nn.Sequential`` that shares
the modules (no copies), and returns the same wrapper for the same model and modules on
every call, so hooks the pipeline registers on a block module fire when the adapter runs
the model through the views. The model itself is never modified.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from torch import nn

_VIEWS: weakref.WeakKeyDictionary[nn.Module, dict[str, nn.Sequential]] = weakref.WeakKeyDictionary()


def view(model: nn.Module, key: str, modules: Sequence[nn.Module]) -> nn.Sequential:
    """The cached ``nn.Sequential`` over ``modules`` of ``model`` named ``key`` (rebuilt
    when the model's modules under that key were replaced)."""
    cache = _VIEWS.setdefault(model, {})
    current = cache.get(key)
    if current is None or len(current) != len(modules) or any(a is not b for a, b in zip(current, modules)):
        current = cache[key] = nn.Sequential(*modules)
    return current
