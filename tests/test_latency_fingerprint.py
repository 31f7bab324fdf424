"""The fingerprint never needs NVML; identity fields tell machines apart."""
from __future__ import annotations

import sys
import types

from nas.latency import fingerprint


def test_cpu_fingerprint_without_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    fp = fingerprint.collect("cpu", threads=1)
    assert fp["device"] == "cpu" and fp["threads"] == 1 and fp["cpu_count"] >= 1
    assert fp["torch"] and fp["platform"]
    assert "nvml_error" in fingerprint.nvml_info()


def test_failing_nvml_is_recorded_not_raised(monkeypatch):
    class NVMLError(Exception):
        pass

    def init():
        raise NVMLError("driver not loaded")

    fake = types.SimpleNamespace(nvmlInit=init)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert fingerprint.nvml_info() == {"nvml_error": "NVMLError: driver not loaded"}


def test_each_nvml_field_is_optional(monkeypatch):
    def boom(*a):
        raise RuntimeError("not supported")

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, NVML_CLOCK_SM=0, NVML_CLOCK_MEM=1,
        NVML_TEMPERATURE_GPU=0, nvmlDeviceGetHandleByIndex=lambda i: "h",
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3", nvmlDeviceGetUUID=lambda h: "GPU-1",
        nvmlSystemGetDriverVersion=lambda: "550.54", nvmlDeviceGetPowerManagementLimit=lambda h: 700000)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    for name in ("nvmlSystemGetCudaDriverVersion_v2", "nvmlDeviceGetClockInfo",
                 "nvmlDeviceGetMaxClockInfo", "nvmlDeviceGetApplicationsClock",
                 "nvmlDeviceGetEnforcedPowerLimit", "nvmlDeviceGetMemoryInfo",
                 "nvmlDeviceGetTemperature", "nvmlDeviceGetPersistenceMode",
                 "nvmlDeviceGetComputeMode", "nvmlDeviceGetMigMode",
                 "nvmlDeviceGetCurrentClocksEventReasons"):
        setattr(fake, name, boom)
    info = fingerprint.nvml_info()
    assert info["gpu_name"] == "NVIDIA H100 80GB HBM3" and info["power_limit_w"] == 700
    assert info["sm_clock_mhz"] is None and "nvml_error" not in info


def test_mismatches_compare_identity_fields_only():
    a = {"device": "cpu", "cpu_model": "EPYC", "cpu_count": 2, "threads": 1, "torch": "2.13"}
    assert fingerprint.mismatches(a, {**a, "torch": "2.14"}) == []
    assert fingerprint.version_notes(a, {**a, "torch": "2.14"}) == ["torch: table 2.13, here 2.14"]
    assert fingerprint.mismatches(a, {**a, "threads": 2}) == ["threads: table 1, here 2"]
    g = {"device": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3"}
    assert fingerprint.mismatches(g, {**g, "gpu_name": "NVIDIA H200"})
