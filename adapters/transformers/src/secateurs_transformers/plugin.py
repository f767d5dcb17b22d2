"""secateurs plugin: transformers adapters, packaged transformers models, the lm-eval evaluator."""

from __future__ import annotations

from secateurs.hookspecs import hookimpl
from secateurs_transformers.bert import BertAdapter
from secateurs_transformers.decoder import DecoderAdapter
from secateurs_transformers.llama import LlamaFamilyAdapter
from secateurs_transformers.lm_eval_evaluator import LmEval
from secateurs_transformers.packaged import packaged_models


@hookimpl
def secateurs_register_adapters(register) -> None:
    register("decoder", DecoderAdapter)
    register("llama", LlamaFamilyAdapter)
    register("bert", BertAdapter)


@hookimpl
def secateurs_register_evaluators(register) -> None:
    register("lm-eval", LmEval)


@hookimpl
def secateurs_register_models(register) -> None:
    for packaged in packaged_models():
        register(packaged.name, lambda p=packaged: p)
