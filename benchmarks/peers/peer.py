"""The llm-compressor side of the peers benchmark; runs in the benchmark's own venv
(llm-compressor, its torch and transformers; no secateurs).

    python peer.py CONFIG_JSON

``CONFIG_JSON``: ``{"model": folder, "calibration": tokens.pt, "method": ..., "out": folder}``.
Loads the model in float32, prunes it with ``oneshot`` (sequential pipeline, the given
token windows in order, batch 1) and saves it uncompressed to ``out`` (with the source
folder's tokenizer files), then prints one JSON line with the pruning phase's times and
peak RSS (``measure.measured``).
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import types
from pathlib import Path

from measure import measured, pin_threads

LAYERS = [r"re:model.layers.\d+$"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def owl_sparsities(model, tokens) -> list[float]:
    """llm-compressor's OWL sparsities of the decoder layers (its own
    ``_infer_owl_layer_sparsity``: M = 5, λ = 0.08, 70 %), with the activation pass it
    calls run as plain forwards over the windows: in 0.14 its own pass
    (``run_calibration`` from ``on_initialize``) raises "Cannot invoke event before
    initializing", and the dict it returns is not accepted as per-layer sparsities."""
    import torch
    from compressed_tensors.utils import match_named_modules
    from llmcompressor.modifiers.pruning.sparsegpt.sgpt_base import SparsityModifierBase

    def activations(model, _dataloader, nsamples: int = 128) -> dict[str, torch.Tensor]:
        acts: dict[str, torch.Tensor] = {}

        def save(name: str, _module, args) -> None:  # as llm-compressor's save_acts
            acts[name] = acts.get(name, 0) + 1.0 / nsamples * args[0].pow(2).sum(dim=(0, 1)).sqrt()

        hooks = [
            m.register_forward_pre_hook(functools.partial(save, n))
            for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and "lm_head" not in n
        ]
        with torch.no_grad():
            for window in tokens.split(1):
                model(input_ids=window)
        for hook in hooks:
            hook.remove()
        return acts

    owl = types.SimpleNamespace(owl_m=5, owl_lmbda=0.08, sparsity=0.7, _get_activations=activations)
    layers = dict(match_named_modules(model, LAYERS))
    return list(SparsityModifierBase._infer_owl_layer_sparsity(owl, model, layers, None).values())


def modifier(method: str, model, tokens):
    """The llm-compressor modifier for one of the benchmark's methods."""
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier

    if method == "wanda-50":
        return WandaPruningModifier(sparsity=0.5, targets=LAYERS)
    if method == "sparsegpt-50":
        return SparseGPTModifier(sparsity=0.5, targets=LAYERS)
    if method == "sparsegpt-2:4":
        return SparseGPTModifier(sparsity=0.5, mask_structure="2:4", targets=LAYERS)
    if method == "owl-wanda-70":
        return WandaPruningModifier(sparsity=owl_sparsities(model, tokens), targets=LAYERS)
    raise ValueError(f"unknown method {method!r}")


def main(config: dict) -> dict:
    pin_threads()
    import torch
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM

    tokens = torch.load(config["calibration"])
    dataset = Dataset.from_dict({"input_ids": tokens.tolist(), "attention_mask": torch.ones_like(tokens).tolist()})
    model = AutoModelForCausalLM.from_pretrained(config["model"], dtype=torch.float32)
    out: dict = {}
    with measured(out):
        oneshot(
            model=model,
            dataset=dataset,
            recipe=[modifier(config["method"], model, tokens)],
            pipeline="sequential",
            shuffle_calibration_samples=False,
            num_calibration_samples=tokens.shape[0],
            max_seq_length=tokens.shape[1],
        )
    model.save_pretrained(config["out"], save_compressed=False)
    for name in TOKENIZER_FILES:
        if (Path(config["model"]) / name).is_file():
            shutil.copy(Path(config["model"]) / name, config["out"])
    import llmcompressor
    import transformers

    out["versions"] = {"llmcompressor": llmcompressor.__version__, "torch": torch.__version__, "transformers": transformers.__version__}
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
