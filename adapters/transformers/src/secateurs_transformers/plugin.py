"""secateurs plugin: transformers adapters, packaged transformers models, the lm-eval
evaluator, the compressed-tensors exporter; all registered by reference, imported when
first built."""

from __future__ import annotations

from secateurs.hookspecs import hookimpl
from secateurs.references import lazy

PACKAGED_MODELS = ("smollm2-135m", "gemma3-270m", "minilm-l6")
"""The names of ``secateurs_transformers.packaged.packaged_models()``."""


@hookimpl
def secateurs_register_adapters(register) -> None:
    register("decoder", "secateurs_transformers.decoder:DecoderAdapter")
    register("llama", "secateurs_transformers.llama:LlamaFamilyAdapter")
    register("bert", "secateurs_transformers.bert:BertAdapter")


@hookimpl
def secateurs_register_evaluators(register) -> None:
    register("lm-eval", "secateurs_transformers.lm_eval_evaluator:LmEval")


@hookimpl
def secateurs_register_exporters(register) -> None:
    register("compressed-tensors", "secateurs_transformers.compressed:CompressedTensorsExporter")


@hookimpl
def secateurs_register_models(register) -> None:
    for name in PACKAGED_MODELS:
        register(name, lazy("secateurs_transformers.packaged:packaged_model", name))
