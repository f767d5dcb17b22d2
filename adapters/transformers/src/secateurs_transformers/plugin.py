"""secateurs plugin: transformers adapters and packaged transformers models."""

from __future__ import annotations

from secateurs.hookspecs import hookimpl
from secateurs_transformers.bert import BertAdapter
from secateurs_transformers.llama import LlamaFamilyAdapter
from secateurs_transformers.packaged import packaged_models


@hookimpl
def secateurs_register_adapters(register) -> None:
    register("llama", LlamaFamilyAdapter)
    register("bert", BertAdapter)


@hookimpl
def secateurs_register_models(register) -> None:
    for packaged in packaged_models():
        register(packaged.name, lambda p=packaged: p)
