"""What every benchmark shares: a description of the machine, the process's peak RSS,
and writing ``benchmarks/results/<name>.json`` atomically (temp file + rename).

Benchmark scripts run as ``python benchmarks/<area>/<script>.py``; their area's helpers
import this module after putting ``benchmarks/`` on ``sys.path``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
from pathlib import Path

import torch

from secateurs.outputs import atomic_file

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": datetime.date.today().isoformat(),
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (``ru_maxrss``, KiB on Linux), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def results_path(name: str) -> Path:
    """``benchmarks/results/<name>.json``."""
    return RESULTS / f"{name}.json"


def write_results(name: str, payload: dict) -> Path:
    """Write :func:`results_path` ``(name)`` atomically and return its path. The file's
    ``machine`` describes this run, whatever ``payload`` (e.g. read back from disk) holds."""
    target = results_path(name)
    with atomic_file(target) as tmp:
        fields = {k: v for k, v in payload.items() if k != "machine"}
        tmp.write_text(json.dumps({"machine": machine(), **fields}, indent=2) + "\n")
    return target
