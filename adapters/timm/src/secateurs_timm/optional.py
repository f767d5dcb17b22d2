"""The optional ``timm`` extra (``pip install 'secateurs-timm[timm]'``).

The torchvision adapters, the image data sources and the evaluators need only torchvision;
timm models need timm. ``HAS_TIMM`` says whether it is installed; ``TIMM`` is then
``secateurs_timm.timmlib`` (timm's API as this distribution calls it), else ``None``;
``require_timm`` gives it or the one-line error saying what needs timm and how to install it.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from secateurs.errors import SecateursError

INSTALL = "pip install 'secateurs-timm[timm]'"
HAS_TIMM: bool = importlib.util.find_spec("timm") is not None
TIMM: ModuleType | None = importlib.import_module("secateurs_timm.timmlib") if HAS_TIMM else None


def timm_missing(what: str) -> SecateursError:
    """The error for ``what`` (a model, an adapter) needing timm when it is not installed."""
    return SecateursError(f"{what} needs timm, which is not installed; install it with: {INSTALL}")


def require_timm(what: str) -> ModuleType:
    """``secateurs_timm.timmlib``; raises ``timm_missing(what)`` when timm is not installed."""
    if TIMM is None:
        raise timm_missing(what)
    return TIMM
