"""secateurs: a pluggable pruning framework for PyTorch models.

One call runs a recipe::

    import secateurs
    outcome = secateurs.prune("recipes/smollm2-wanda-50.toml")

The parts (adapters, scorers, allocators, appliers, exporters) are plugins; see
``secateurs.hookspecs`` for the contract and ``secateurs plugins`` for what is installed.
"""

from secateurs.errors import SecateursError
from secateurs.loading import find_adapter, load
from secateurs.pipeline import PruneSpec, prune_model
from secateurs.plugins import get_manager
from secateurs.recipe import Recipe, load_recipe
from secateurs.run import RunOutcome, evaluate, prune

__all__ = [
    "PruneSpec",
    "Recipe",
    "RunOutcome",
    "SecateursError",
    "evaluate",
    "find_adapter",
    "get_manager",
    "load",
    "load_recipe",
    "prune",
    "prune_model",
]
