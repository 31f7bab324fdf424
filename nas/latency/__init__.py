"""Measured per-block latency tables and the latency predictor built on them.

``LatencyTable.load(path, ...)`` reads a committed table (CSV + JSON fingerprint) and
``.predict_ms(arch)`` predicts an architecture's end-to-end forward latency. Building
and validating tables (``python -m nas.latency build|predict|validate``) needs torch;
loading and predicting need only pandas and numpy.
"""
from nas.latency.calibrate import Calibration
from nas.latency.spec import BlockKey, Workload, arch_blocks, space_blocks
from nas.latency.table import LatencyTable

__all__ = ["BlockKey", "Calibration", "LatencyTable", "Workload", "arch_blocks", "space_blocks"]
