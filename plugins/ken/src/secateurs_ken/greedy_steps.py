"""The greedy as ``k`` batched tensor steps, for any device (the path used off the CPU).

Each step advances every row of the problem by one grid point. The free entries of every
row are kept as hierarchical bit sets, so a step is a fixed number of tensor operations over
the rows, whatever their width, without loops over rows or entries.
"""

from __future__ import annotations

import math

import torch

from secateurs_ken.matching import Matching

_SHIFT = 5
_BITS = 1 << _SHIFT  # positions per word (32-bit words in int64: no sign-bit trouble)
_LOW = _BITS - 1
_FULL = (1 << _BITS) - 1


_DE_BRUIJN = 0x077CB531  # B(2, 5): the top 5 bits of (2^i * it) mod 2^32 differ for every i < 32
_DE_BRUIJN_POSITION: dict[torch.device, torch.Tensor] = {}


def _lowest_bit(m: torch.Tensor) -> torch.Tensor:
    """Index of the lowest set bit of each word ``m`` (de Bruijn multiplication: integer
    operations only). Junk where ``m == 0``."""
    table = _DE_BRUIJN_POSITION.get(m.device)
    if table is None:
        i = torch.arange(_BITS, dtype=torch.int64)
        table = torch.empty(_BITS, dtype=torch.int64).index_copy_(0, (((1 << i) * _DE_BRUIJN) & _FULL) >> 27, i)
        table = _DE_BRUIJN_POSITION.setdefault(m.device, table.to(m.device))
    return table.index_select(0, (((m & -m) * _DE_BRUIJN) & _FULL) >> 27)


class _FreeSet:
    """The free (untaken) positions ``0 .. n-1`` of every row as a hierarchy of bit sets:
    level 0 holds one bit per position, each higher level one bit per non-empty word of the
    level below, up to a single word. Each row is stored twice, as is and mirrored
    (position ``i`` at ``n - 1 - i``), so that the nearest free entry on either side is one
    batched "next free at or after" query. A query or a take costs a fixed number of tensor
    operations over the rows (one word per level), without loops over entries. Each row's
    words sit between two empty guard words, so queries just past either end need no bounds
    checks."""

    def __init__(self, n_rows: int, n: int, device: torch.device) -> None:
        self.n, self.n_rows = n, n_rows
        self.levels: list[torch.Tensor] = []  # flat [2 * n_rows * (words + 2)] each
        self.bases: list[torch.Tensor] = []  # index of each (row, copy)'s word 0
        self.words: list[int] = []
        bit = torch.ones(_BITS, dtype=torch.int64, device=device) << torch.arange(_BITS, device=device)
        self.bit, self.at_or_above = bit, _FULL ^ (bit - 1)
        count = n
        while True:
            words = -(-count // _BITS)
            full = torch.arange(words * _BITS, device=device).view(words, _BITS) < count
            word = torch.zeros(words + 2, dtype=torch.int64, device=device)
            word[1:-1] = (full.to(torch.int64) * bit).sum(dim=1)
            self.levels.append(word.repeat(2 * n_rows))
            self.bases.append(torch.arange(2 * n_rows, device=device) * (words + 2) + 1)
            self.words.append(words)
            if words == 1:
                break
            count = words

    def _next(self, q: torch.Tensor, bases: list[torch.Tensor]) -> torch.Tensor:
        """Smallest free position ``>= q`` in the stored rows whose word-0 indices per level
        are ``bases`` (``n`` if none)."""
        result = torch.full_like(q, self.n)
        done = torch.zeros_like(q, dtype=torch.bool)
        for level in range(len(self.words)):
            w = q >> _SHIFT
            m = self.levels[level].index_select(0, bases[level] + w) & self.at_or_above.index_select(0, q & _LOW)
            hit = (m != 0) & ~done
            idx = (w << _SHIFT) + _lowest_bit(m)
            for lower in range(level - 1, -1, -1):  # descend (junk for rows without a hit: clamp)
                word = self.levels[lower].index_select(0, bases[lower] + idx.clamp(-1, self.words[lower]))
                idx = (idx << _SHIFT) + _lowest_bit(word)
            result = torch.where(hit, idx, result)
            done |= hit
            if bool(done.all()):
                break
            q = w + 1
        return result

    def next_free(self, p: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Smallest free position ``>= p`` in each of ``rows`` (``n`` if none); ``p`` in ``[0, n]``."""
        return self._next(p, [b.index_select(0, rows) for b in self.bases])

    def nearest(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(largest free < p or -1, smallest free >= p or n)`` per row; ``p`` in ``[0, n]``."""
        both = self._next(torch.cat([p, self.n - p]), self.bases)
        return self.n - 1 - both[self.n_rows :], both[: self.n_rows]

    def take(self, positions: torch.Tensor, live: torch.Tensor | None = None) -> None:
        """Mark ``positions`` (one per row) taken; rows with ``live`` False are left alone."""
        q = torch.cat([positions, self.n - 1 - positions])
        clear = None if live is None else live.repeat(2)
        for level in range(len(self.words)):
            w = q >> _SHIFT
            at = self.bases[level] + w
            word = self.levels[level].index_select(0, at)
            new = word & ~self.bit.index_select(0, q & _LOW)
            if clear is not None:
                new = torch.where(clear, new, word)
            self.levels[level].index_copy_(0, at, new)
            emptied = new == 0
            clear = emptied if clear is None else clear & emptied
            if not bool(clear.any()):
                break
            q = w

    def taken(self) -> torch.Tensor:
        """Bool ``[n_rows, n]``: True where taken."""
        words = self.levels[0].view(2 * self.n_rows, -1)[: self.n_rows, 1:-1]
        bits = (words.unsqueeze(2) >> torch.arange(_BITS, device=words.device)) & 1
        return bits.reshape(self.n_rows, -1)[:, : self.n] == 0


def take_in_steps(m: Matching) -> torch.Tensor:
    """The sorted positions taken by the greedy on ``m`` (bool ``[R, n]``), in ``K`` batched
    steps (``K`` = the most points of any row)."""
    n_rows, n = m.xs.shape
    dev = m.xs.device
    points = m.points()
    right_of = torch.searchsorted(m.xs, points).t().contiguous()  # first position >= point
    points = points.t().contiguous()  # one contiguous row per step: [K, R]
    live = (torch.arange(points.shape[0], device=dev).view(-1, 1) < m.count.view(1, -1)).contiguous()
    all_live = live.all(dim=1).tolist()
    free = _FreeSet(n_rows, n, dev)
    # sorted values with sentinels at positions -1 (-inf) and n (+inf): a missing neighbour
    # is infinitely far; flat index of (row, position) = row * (n + 2) + 1 + position
    padded = torch.full((n_rows, n + 2), math.inf, dtype=torch.float64, device=dev)
    padded[:, 0] = -math.inf
    padded[:, 1:-1] = m.xs
    flat_xs = padded.view(-1)
    flat_perm = torch.cat([m.perm[:, :1], m.perm, m.perm[:, -1:]], dim=1).reshape(-1)
    origin = torch.arange(n_rows, device=dev) * (n + 2) + 1
    group_start = m.group_start()
    if bool((group_start == torch.arange(n, device=dev)).all()):  # no value occurs twice
        group_start = None
    else:  # padded like the values, -1 at position -1
        group_start = torch.cat([torch.full((n_rows, 1), -1, device=dev), group_start, group_start[:, -1:]],
                                dim=1).reshape(-1)
    for t in range(points.shape[0]):
        g = points[t]
        left, right = free.nearest(right_of[t])
        if group_start is not None:  # among equal values the lowest index is the leftmost free
            first = group_start.index_select(0, origin + left)
            moved = torch.nonzero(first != left).view(-1)
            if moved.numel():
                left = left.index_copy(0, moved, free.next_free(first.index_select(0, moved), moved))
        at_left, at_right = origin + left, origin + right
        d_left = g - flat_xs.index_select(0, at_left)
        d_right = flat_xs.index_select(0, at_right) - g
        take_left = d_left < d_right
        tie = d_left == d_right
        if bool(tie.any()):
            take_left |= tie & (flat_perm.index_select(0, at_left) < flat_perm.index_select(0, at_right))
        chosen = torch.where(take_left, left, right)
        free.take(chosen, None if all_live[t] else live[t])
    return free.taken()
