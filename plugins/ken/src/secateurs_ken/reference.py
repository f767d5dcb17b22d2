"""The published KEN selection for one row, written straightforwardly (scikit-learn
KernelDensity per row, then the sequential greedy), without the reference code's
value-matching bug. It is the specification :func:`secateurs_ken.select.ken_select` is
tested and benchmarked against; it is slow by design. Needs scikit-learn."""

from __future__ import annotations

import numpy as np


def reference_select_row(x: np.ndarray, k: int, round_density: bool = True) -> np.ndarray:
    """Bool keep-mask of one row ``x`` (float64) keeping ``min(k, len(x))`` entries."""
    from sklearn.neighbors import KernelDensity

    n = len(x)
    k = min(k, n)
    h = abs(1.06 * x.std() * n ** (-1 / 5))
    grid = np.linspace(x.min(), x.max(), k)
    if h > 0:
        dens = np.exp(KernelDensity(kernel="gaussian", bandwidth=h).fit(x[:, None]).score_samples(grid[:, None]))
    else:
        dens = np.zeros(k)
    if round_density:
        dens = np.round(dens)
    taken = np.zeros(n, bool)
    for i in np.argsort(-dens, kind="stable"):
        dist = np.abs(x - grid[i])
        dist[taken] = np.inf
        taken[int(np.argmin(dist))] = True
    return taken
