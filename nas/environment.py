"""What ran an experiment: revision, versions, machine, GPU and load, stored with its results.

Needs only the standard library and torch, so GPU scripts without Optuna can use it.
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib import metadata

from nas.paths import CHECKOUT


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _output(cmd: list[str]) -> str | None:
    """A command's stdout, or None where it is missing or fails (no git clone, no driver)."""
    try:
        return subprocess.run(cmd, cwd=CHECKOUT, capture_output=True, text=True,
                              timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def git_revision() -> str | None:
    """The repository's commit (``+dirty`` when tracked files changed), or None outside git."""
    if CHECKOUT is None:  # an installed tool: no source tree to ask
        return None
    rev, dirty = _output(["git", "rev-parse", "HEAD"]), _output(["git", "status", "--porcelain",
                                                                 "--untracked-files=no"])
    return rev and rev + ("+dirty" if dirty else "")


def environment(device: str = "cpu") -> dict:
    """Git revision, Python, platform, library versions, threads, date, load and, on
    ``device="cuda"``, the GPU, CUDA version, driver and clocks."""
    import torch
    env = {"git_revision": git_revision(),
           "python": platform.python_version(), "platform": platform.platform(),
           "torch": str(torch.__version__), "optuna": _version("optuna"), "pandas": _version("pandas"),
           "cpus": os.cpu_count(), "cpu_threads": torch.get_num_threads(), "device": device,
           "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           # The 2 cores are shared: a load above 2 means other work slowed this run.
           "load_average_1_5_15min_at_end": [round(x, 2) for x in os.getloadavg()]}
    if device == "cuda":  # the GPU as the latency tables record it: NVML (nvidia-ml-py)
        from nas.latency.fingerprint import nvml_info
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, nvml=nvml_info())
    return env
