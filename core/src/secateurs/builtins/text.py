"""Built-in text calibration source ``text`` and evaluator ``perplexity``.

Both take a corpus name (``secateurs.corpora``: shakespeare, nyt, with ``-train`` /
``-test`` splits) or a path to a text file, and need a model loaded with its tokenizer.
"""

from __future__ import annotations

import math
import random
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from secateurs.corpora import corpus_text
from secateurs.errors import SecateursError
from secateurs.offload import execution_device
from secateurs.protocols import LoadedModel
from secateurs.types import ModelFacts
from secateurs.validators import optional, positive_int

_CHARS_PER_TOKEN_GUESS = 3


def _seqlen_field(_inst, attribute, value) -> None:
    if value != "max" and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"{attribute.name} must be a positive number of tokens or \"max\", got {value!r}")


def window_length(seqlen: int | str, facts: ModelFacts, what: str) -> int:
    """``seqlen`` checked against the model's maximum positions (``facts.max_positions``,
    when it has one); ``"max"`` is that maximum. Longer windows are refused: past it a model
    crashes (BERT) or runs beyond its trained range (LLaMA)."""
    limit = facts.max_positions
    if seqlen == "max":
        if limit is None:
            raise SecateursError(f"{what} seqlen = \"max\": {facts.source} records no maximum positions; give a number")
        return int(limit)
    if limit is not None and seqlen > limit:
        raise SecateursError(
            f"{what} seqlen {seqlen} exceeds the maximum positions of {facts.source} ({limit}); "
            f"use seqlen <= {limit} (or seqlen = \"max\")"
        )
    return int(seqlen)


def loaded_facts(loaded: LoadedModel) -> ModelFacts:
    """The facts of a loaded model: its config's ``max_position_embeddings``, when it has one."""
    limit = getattr(getattr(loaded.model, "config", None), "max_position_embeddings", None)
    return ModelFacts(loaded.source, limit)


def _tokenizer(loaded: LoadedModel):
    if loaded.tokenizer is None:
        raise SecateursError(f"{loaded.source} was loaded without a tokenizer; text data needs one")
    return loaded.tokenizer


def _encode(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


@attrs.frozen
class TextCalibration:
    """``nsamples`` windows of ``seqlen`` tokens at seeded random places of a corpus,
    batched ``batch_size`` at a time: a list of ``{"input_ids": LongTensor[b, seqlen]}``."""

    corpus: str = "shakespeare-train"
    nsamples: int = attrs.field(default=128, validator=positive_int)
    seqlen: int | str = attrs.field(default=2048, validator=_seqlen_field)
    seed: int = 0
    batch_size: int = attrs.field(default=1, validator=positive_int)

    def check_model(self, facts: ModelFacts) -> None:
        window_length(self.seqlen, facts, "calibration")

    def batches(self, loaded: LoadedModel) -> list[Any]:
        seqlen = window_length(self.seqlen, loaded_facts(loaded), "calibration")
        tokenizer = _tokenizer(loaded)
        text = corpus_text(self.corpus)
        rng = random.Random(self.seed)
        span = seqlen * _CHARS_PER_TOKEN_GUESS * 2
        samples = []
        while len(samples) < self.nsamples:
            if len(text) <= span:
                raise SecateursError(
                    f"corpus {self.corpus!r} is too short for {seqlen}-token samples; "
                    "use a longer text or a smaller seqlen"
                )
            start = rng.randrange(0, len(text) - span)
            ids = _encode(tokenizer, text[start : start + span])
            if ids.numel() >= seqlen:
                samples.append(ids[:seqlen])
            else:
                span *= 2
        stacked = torch.stack(samples)
        return [{"input_ids": chunk} for chunk in stacked.split(self.batch_size)]


@attrs.frozen
class Perplexity:
    """Perplexity over non-overlapping ``seqlen``-token windows of a corpus (the first
    ``max_windows`` of them when set): ``exp(total NLL / predicted tokens)``."""

    corpus: str = "shakespeare-test"
    seqlen: int | str = attrs.field(default=2048, validator=_seqlen_field)
    max_windows: int | None = attrs.field(default=None, validator=optional(positive_int))
    progress: bool = True

    def check_model(self, facts: ModelFacts) -> None:
        window_length(self.seqlen, facts, "evaluation")

    def windows(self, loaded: LoadedModel) -> torch.Tensor:
        seqlen = window_length(self.seqlen, loaded_facts(loaded), "evaluation")
        text = corpus_text(self.corpus)
        if self.max_windows is not None:  # tokenize only what is needed
            text = text[: self.max_windows * seqlen * _CHARS_PER_TOKEN_GUESS * 3]
        ids = _encode(_tokenizer(loaded), text)
        n = ids.numel() // seqlen
        if self.max_windows is not None:
            n = min(n, self.max_windows)
        if n == 0:
            raise SecateursError(f"corpus {self.corpus!r} has fewer than {seqlen} tokens")
        return ids[: n * seqlen].view(n, seqlen)

    def evaluate(self, loaded: LoadedModel) -> dict[str, float]:
        model = loaded.model
        device = execution_device(model)
        windows = self.windows(loaded)
        nll, count = 0.0, 0
        with torch.no_grad():
            for window in tqdm(windows, desc="perplexity", unit="window", disable=not self.progress):
                logits = loaded.adapter.forward(model, {"input_ids": window[None].to(device)}).logits
                loss = F.cross_entropy(logits[0, :-1].float(), window[1:].to(device), reduction="sum")
                nll += float(loss)
                count += window.numel() - 1
        return {"perplexity": math.exp(nll / count), "tokens": float(count), "windows": float(len(windows))}
