"""Measured per-block latency tables and the latency predictor built on them.

Use a committed table (pandas and numpy only, no torch)::

    from nas.latency import LatencyTable
    table = LatencyTable.load("latency_tables/cpu-tiny.csv", space=space, device="cpu")
    ms = table.predict_ms(arch)          # end-to-end forward latency, milliseconds
    table.batch_size, table.seq_len, table.device

Build, predict and validate (Hydra, ``conf/latency.yaml``)::

    python -m nas.latency build                      # hardware=cpu search_space=tiny
    python -m nas.latency predict predict.arch=a.yaml
    python -m nas.latency validate                   # report in experiments/latency_<table>
    python experiments/latency_gpu/run.py            # the GPU table, without Hydra

How: every block (``spec.py``) is the real module of ``nas.model`` timed back to back
(``measure.py``, ``blocks.py``); a per-precision linear correction fitted on end-to-end
measurements of random architectures (``calibrate.py``) turns the sum of a model's
blocks into its latency; both live with the table (``files.py``), which the predictor
loads and checks (``table.py``), and ``validate.py`` checks the predictor on
architectures drawn from another seed.
"""
from nas.latency.calibrate import Calibration
from nas.latency.spec import BlockKey, Workload, arch_blocks, space_blocks
from nas.latency.table import LatencyTable

__all__ = ["BlockKey", "Calibration", "LatencyTable", "Workload", "arch_blocks", "space_blocks"]
