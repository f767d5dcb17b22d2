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

import json
import shutil
import sys
from pathlib import Path

from measure import measured, pin_threads

LAYERS = [r"re:model.layers.\d+$"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def modifier(method: str):
    """The llm-compressor modifier for one of the benchmark's methods."""
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier

    if method == "wanda-50":
        return WandaPruningModifier(sparsity=0.5, targets=LAYERS)
    if method == "sparsegpt-50":
        return SparseGPTModifier(sparsity=0.5, targets=LAYERS)
    if method == "sparsegpt-2:4":
        return SparseGPTModifier(sparsity=0.5, mask_structure="2:4", targets=LAYERS)
    if method == "owl-wanda-70":
        return WandaPruningModifier(sparsity=0.7, sparsity_profile="owl", owl_m=5, owl_lmbda=0.08, targets=LAYERS)
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
            recipe=[modifier(config["method"])],
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
