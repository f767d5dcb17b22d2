import copy
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lm_models import tiny_causal_lm


def tiny_bert(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=97, hidden_size=24, num_hidden_layers=3, num_attention_heads=2,
                     intermediate_size=40, max_position_embeddings=32, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


def fine_tuned(pre: torch.nn.Module) -> torch.nn.Module:
    """A 'fine-tuned' copy of ``pre``: every weight perturbed."""
    ft = copy.deepcopy(pre)
    with torch.no_grad():
        for p in ft.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return ft


@pytest.fixture
def pair():
    """A 'pre-trained' tiny BERT and a 'fine-tuned' copy with perturbed weights."""
    pre = tiny_bert(0)
    return pre, fine_tuned(pre)


@pytest.fixture
def saved_pair(tmp_path):
    """``saved_pair(family, dtype)``: a pre-trained tiny model (``bert``: 3 layers, or
    ``llama``: 4) and its fine-tuned copy in ``dtype``, saved as safetensors folders;
    returns the two folders and the pre-trained model."""

    def make(family: str, dtype: torch.dtype) -> tuple[Path, Path, torch.nn.Module]:
        pre = (tiny_bert(0) if family == "bert" else tiny_causal_lm("llama", layers=4)).to(dtype)
        folders = tmp_path / f"{family}-pre", tmp_path / f"{family}-ft"
        for model, folder in zip((pre, fine_tuned(pre)), folders, strict=True):
            model.save_pretrained(folder)
        return *folders, pre

    return make
