"""The memory-bandwidth floor of a decode step: how fast the hardware allows, not the runtime.

A generation step must read every weight once (the output projection is the tied token
embedding; of the position table, one row per step) and the whole KV cache of its
context. Those bytes over the GPU's memory bandwidth, measured on the machine itself
with a large device-to-device copy (bytes read plus written), are the time no runtime
beats at batch sizes where the arithmetic is cheap: the yardstick a fused runtime is
held to, printed beside the baseline's measured decode time in every validation report.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas.latency.measure import TimerSettings, time_callable

if TYPE_CHECKING:
    from nas.space import ArchConfig, SearchSpace

ELEMENT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1}


def step_bytes(arch: ArchConfig, batch_size: int, context: int) -> int:
    """Bytes one decode step of ``arch`` must read: weights once, the whole KV cache."""
    w = ELEMENT_BYTES[arch.precision]
    kv = 4 if arch.precision == "int8" else w  # int8 models keep fp32 activations
    d = arch.d_model
    weights = arch.decoder_params + arch.vocab_size * d + 2 * d + d  # + LayerNorm, one row
    return w * weights + batch_size * context * arch.kv_bytes_per_token(kv)


def bandwidth_gbps(gib: float = 4.0) -> float:
    """The GPU's memory bandwidth: a copy of ``gib`` GiB, bytes read + written per second."""
    import torch
    src = torch.empty(int(gib * 2**30) // 4, device="cuda").normal_()  # never zeros
    dst = torch.empty_like(src)
    t = time_callable(lambda: dst.copy_(src), "cuda", TimerSettings(repeats=15, warmup=3,
                                                                    window_ms=50.0))
    return 2 * src.numel() * src.element_size() / (t.median_ms / 1e3) / 1e9


def baseline_floor(space: SearchSpace, workload: Any, timer: TimerSettings) -> dict[str, Any] | None:
    """The space's baseline decode step measured in ``workload`` beside its floor.

    Returns None unless the workload is a decode on a GPU and the space has a baseline.
    """
    from nas.latency.blocks import time_model
    if workload.phase != "decode" or workload.device != "cuda" or not space.baseline:
        return None
    arch = space.baseline_arch(workload.precisions[0])
    bw = bandwidth_gbps()
    floor = step_bytes(arch, workload.batch_size, workload.seq_len) / (bw * 1e9) * 1e3
    t = time_model(arch, workload, timer)
    return {"arch": arch.describe(), "precision": arch.precision,
            "measured_ms": round(t.median_ms, 5), "bandwidth_gbps": round(bw, 1),
            "bytes": step_bytes(arch, workload.batch_size, workload.seq_len),
            "floor_ms": round(floor, 5), "ratio": round(t.median_ms / floor, 3)}


def floor_line(f: dict[str, Any]) -> str:
    return (f"baseline {f['arch']}: decode {f['measured_ms']:.4f} ms per step; floor "
            f"{f['floor_ms']:.4f} ms ({f['bytes'] / 1e6:.0f} MB at {f['bandwidth_gbps']:.0f} GB/s "
            f"measured here): {f['ratio']:.2f}x the floor")
