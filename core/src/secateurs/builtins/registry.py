"""What the built-in plugins register, by reference: importing this module imports none of
the parts (nor torch); each part's module is imported when the part is first built.

``BUILTINS`` maps each built-in plugin (named after the module its parts live in) to its
parts, kind → registered name → attribute of that module; ``secateurs.plugins`` registers
one ``BuiltinPlugin`` per entry, in this order.
"""

from __future__ import annotations

from collections.abc import Mapping

from secateurs.hookspecs import Register, hookimpl

BUILTINS: dict[str, dict[str, dict[str, str]]] = {
    "secateurs.builtins.scorers": {
        "scorer": {
            "magnitude": "MagnitudeScorer",
            "random": "RandomScorer",
            "wanda": "WandaScorer",
            "activation": "ActivationScorer",
        },
    },
    "secateurs.builtins.layers": {"scorer": {"block-influence": "BlockInfluence", "skip-loss": "SkipLoss"}},
    "secateurs.builtins.allocators": {"allocator": {"uniform": "UniformAllocator", "global": "GlobalAllocator"}},
    "secateurs.builtins.appliers": {"applier": {"zero": "ZeroApplier"}},
    "secateurs.builtins.sparsegpt": {"applier": {"sparsegpt": "SparseGPTApplier"}},
    "secateurs.builtins.owl": {"allocator": {"owl": "OWLAllocator"}},
    "secateurs.builtins.remove": {"applier": {"remove": "RemoveApplier"}},
    "secateurs.builtins.exporters": {"exporter": {"safetensors": "SafetensorsExporter", "report": "ReportExporter"}},
    "secateurs.builtins.text": {"calibration": {"text": "TextCalibration"}, "evaluator": {"perplexity": "Perplexity"}},
    "secateurs.builtins.module": {"adapter": {"module": "ModuleAdapter"}},
}


class BuiltinPlugin:
    """The hooks of one ``BUILTINS`` entry: registers ``"module:Attribute"`` references."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.parts: Mapping[str, Mapping[str, str]] = BUILTINS[module]

    def _register(self, kind: str, register: Register) -> None:
        for name, attribute in self.parts.get(kind, {}).items():
            register(name, f"{self.module}:{attribute}")

    @hookimpl
    def secateurs_register_adapters(self, register: Register) -> None:
        self._register("adapter", register)

    @hookimpl
    def secateurs_register_scorers(self, register: Register) -> None:
        self._register("scorer", register)

    @hookimpl
    def secateurs_register_allocators(self, register: Register) -> None:
        self._register("allocator", register)

    @hookimpl
    def secateurs_register_appliers(self, register: Register) -> None:
        self._register("applier", register)

    @hookimpl
    def secateurs_register_exporters(self, register: Register) -> None:
        self._register("exporter", register)

    @hookimpl
    def secateurs_register_calibration_sources(self, register: Register) -> None:
        self._register("calibration", register)

    @hookimpl
    def secateurs_register_evaluators(self, register: Register) -> None:
        self._register("evaluator", register)
