"""Latency-aware neural architecture search for Transformers (distribution ``latnas``).

From Python (a notebook): ``from nas import run_search`` (``nas.api``).
"""

__version__ = "0.1.0"

from nas.api import SearchOutcome, run_search  # noqa: E402 (after the version, which setuptools reads)

__all__ = ["SearchOutcome", "run_search", "__version__"]
