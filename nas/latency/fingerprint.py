"""A fingerprint of the hardware and software that measured a latency table.

GPU fields come from NVML (``pynvml``, from nvidia-ml-py) and from torch; every field is
optional, so a machine without NVML, or whose NVML fails, still gets a fingerprint
(CPU model, core and thread count, platform, library versions). Nothing here stops a
CPU build.
"""
from __future__ import annotations

import os
import platform
from typing import Any, Callable

# Fields that say which machine measured a table; two fingerprints that differ in one
# of these time different hardware. Versions and clocks are kept but only reported.
IDENTITY = {"cpu": ("device", "cpu_model", "cpu_count", "threads"),
            "cuda": ("device", "gpu_name")}


def cpu_model() -> str | None:
    """The CPU model name (``/proc/cpuinfo`` on Linux, ``platform`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def nvml_info(uuid: str | None = None) -> dict[str, Any]:
    """GPU facts from NVML, each field optional.

    Args:
        uuid: the GPU's UUID as torch reports it (picks the right GPU when several are
            visible; NVML numbers them differently from ``CUDA_VISIBLE_DEVICES``).
            Without it, GPU 0.

    Returns:
        A dict of plain values; ``nvml_error`` says why NVML gave nothing.
    """
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception as e:  # no library, no driver, no permission: a CPU box
        return {"nvml_error": f"{type(e).__name__}: {e}"}
    info: dict[str, Any] = {}
    try:
        try:
            h = (pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-"))
                                                  else f"GPU-{uuid}")
                 if uuid else pynvml.nvmlDeviceGetHandleByIndex(0))
        except Exception:
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
        sm, mem = pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM
        fields: dict[str, Callable[[], Any]] = {
            "gpu_name": lambda: pynvml.nvmlDeviceGetName(h),
            "gpu_uuid": lambda: pynvml.nvmlDeviceGetUUID(h),
            "driver": pynvml.nvmlSystemGetDriverVersion,
            "cuda_driver_version": lambda: pynvml.nvmlSystemGetCudaDriverVersion_v2(),
            "sm_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(h, sm),
            "mem_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(h, mem),
            "max_sm_clock_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, sm),
            "max_mem_clock_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, mem),
            "app_sm_clock_mhz": lambda: pynvml.nvmlDeviceGetApplicationsClock(h, sm),
            "power_limit_w": lambda: pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1000,
            "enforced_power_limit_w": lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000,
            "memory_total_mib": lambda: pynvml.nvmlDeviceGetMemoryInfo(h).total // 2**20,
            "temperature_c": lambda: pynvml.nvmlDeviceGetTemperature(
                h, pynvml.NVML_TEMPERATURE_GPU),
            "persistence_mode": lambda: pynvml.nvmlDeviceGetPersistenceMode(h),
            "compute_mode": lambda: pynvml.nvmlDeviceGetComputeMode(h),
            "mig_mode": lambda: pynvml.nvmlDeviceGetMigMode(h)[0],
            "clocks_event_reasons": lambda: hex(pynvml.nvmlDeviceGetCurrentClocksEventReasons(h)),
        }
        for name, get in fields.items():
            try:
                info[name] = _plain(get())
            except Exception:  # not supported on this GPU/driver: leave the field out
                info[name] = None
    except Exception as e:
        info["nvml_error"] = f"{type(e).__name__}: {e}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return info


def collect(device: str, threads: int) -> dict[str, Any]:
    """The fingerprint of this machine for a measurement on ``device``.

    Args:
        device: ``"cpu"`` or ``"cuda"``.
        threads: the CPU intra-op thread count the measurement fixed.

    Returns:
        A JSON-ready dict: platform, CPU, library versions and, on CUDA, the GPU.
    """
    import numpy
    import torch
    fp: dict[str, Any] = {
        "device": device,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }
    try:
        import pandas
        fp["pandas"] = pandas.__version__
    except ImportError:
        pass
    if device == "cuda":
        fp["cuda_runtime"] = torch.version.cuda
        # fp32 matmuls run in full fp32 unless TF32 is allowed; the table is only valid
        # for the setting it was measured with.
        fp["allow_tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
        fp["float32_matmul_precision"] = torch.get_float32_matmul_precision()
        try:
            fp["cudnn"] = torch.backends.cudnn.version()
        except Exception:
            fp["cudnn"] = None
        uuid = None
        try:
            props = torch.cuda.get_device_properties(torch.cuda.current_device())
            fp["torch_gpu_name"] = props.name
            fp["compute_capability"] = f"{props.major}.{props.minor}"
            fp["l2_cache_bytes"] = int(getattr(props, "L2_cache_size", 0)) or None
            uuid = str(getattr(props, "uuid", "")) or None
        except Exception as e:
            fp["torch_gpu_error"] = f"{type(e).__name__}: {e}"
        fp.update(nvml_info(uuid))
        if not fp.get("gpu_name"):
            fp["gpu_name"] = fp.get("torch_gpu_name")  # NVML missing: torch still knows the name
    return fp


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (how busy a shared machine was), if known."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def mismatches(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Identity fields (which hardware) in which two fingerprints differ.

    Returns:
        ``"field: recorded X, here Y"`` for each difference; empty when they match.
    """
    device = recorded.get("device", "cpu")
    out = []
    for key in IDENTITY.get(device, ("device",)):
        a, b = recorded.get(key), current.get(key)
        if a != b:
            out.append(f"{key}: table {a!r}, here {b!r}")
    return out


def version_notes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Software versions that changed since the table was measured (worth a warning)."""
    keys = ("torch", "cuda_runtime", "driver")
    return [f"{k}: table {recorded.get(k)}, here {current.get(k)}" for k in keys
            if recorded.get(k) != current.get(k)]
