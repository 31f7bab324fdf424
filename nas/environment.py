"""What ran an experiment: revision, versions, machine and load, stored with its results."""
from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict:
    """Git revision, Python, platform, torch/optuna versions, threads, date and load."""
    import torch
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {"git_revision": rev.stdout.strip() or None, "python": platform.python_version(),
            "platform": platform.platform(), "torch": torch.__version__,
            "optuna": _version("optuna"), "cpu_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # The 2 cores are shared: a load above 2 means other work slowed this run.
            "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()]}
