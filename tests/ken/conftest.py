import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification


def tiny_bert(seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=97, hidden_size=24, num_hidden_layers=3, num_attention_heads=2,
                     intermediate_size=40, max_position_embeddings=32, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


@pytest.fixture
def pair():
    """A 'pre-trained' tiny BERT and a 'fine-tuned' copy with perturbed weights."""
    pre = tiny_bert(0)
    ft = tiny_bert(0)
    with torch.no_grad():
        for p in ft.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return pre, ft
