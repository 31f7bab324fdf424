"""Timers: the steady-state time of one call of a block or a model, on a CPU or a GPU.

A single timed call of a small block mostly measures the timer itself (a CUDA event pair
and a synchronisation cost tens of microseconds, as much as the block), which is why
plain sums of isolated timings overestimate small models. So every measurement here
runs the callable ``inner`` times back to back between two timestamps and divides,
the way consecutive blocks run inside a model, and repeats that window ``repeats``
times to keep the median and the spread. ``inner`` is chosen so that one window lasts
about ``window_ms``.

On the CPU the clock is, by default, the CPU time of the measuring thread
(``cpu_clock="thread"``, only with one intra-op thread, where every op runs in that
thread): on a dedicated core it equals wall time, and on a shared machine it leaves out
the time slices other processes take, which otherwise inflate whole windows by up to
2x. ``cpu_clock="wall"`` uses ``time.perf_counter`` instead (and is needed for more than
one thread). Both clocks are read in every CPU window, so a report can show both.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

CPU_CLOCKS = ("thread", "wall")


@dataclass(frozen=True)
class TimerSettings:
    """How hard to measure.

    Attributes:
        repeats: timed windows per measurement (median and p10/p90 are over these).
        warmup: untimed calls first (allocator, cuBLAS heuristics, caches, CPU clocks).
        window_ms: target length of one timed window; ``inner`` calls fill it.
        max_inner: cap on calls per window.
        cpu_clock: ``"thread"`` (CPU time of this thread; one intra-op thread only) or
            ``"wall"``. CUDA timings always use CUDA events.
        passes: how many times the builder and the validator measure everything, one
            whole sweep after another, keeping for each block or model the pass with the
            lowest median. Interference from other processes only ever adds time, and a
            burst of it rarely spans all passes, which are far apart in time.
    """

    repeats: int = 25
    warmup: int = 10
    window_ms: float = 10.0
    max_inner: int = 2000
    cpu_clock: str = "thread"
    passes: int = 1

    def __post_init__(self) -> None:
        if (self.repeats < 1 or self.warmup < 0 or self.window_ms <= 0 or self.max_inner < 1
                or self.passes < 1):
            raise ValueError(f"TimerSettings: bad values {self}")
        if self.cpu_clock not in CPU_CLOCKS:
            raise ValueError(f"cpu_clock {self.cpu_clock!r}; allowed: {list(CPU_CLOCKS)}")

    def to_dict(self) -> dict[str, object]:
        return {"repeats": self.repeats, "warmup": self.warmup, "window_ms": self.window_ms,
                "max_inner": self.max_inner, "cpu_clock": self.cpu_clock, "passes": self.passes}


@dataclass(frozen=True)
class Timing:
    """Per-call time in milliseconds: the median and p10/p90 over ``repeats`` windows."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    inner: int
    wall_median_ms: float | None = None  # CPU: the wall-clock median of the same windows

    def per(self, n: int) -> "Timing":
        """The time of one of ``n`` calls that this timing measured together."""
        return Timing(self.median_ms / n, self.p10_ms / n, self.p90_ms / n, self.repeats,
                      self.inner * n,
                      None if self.wall_median_ms is None else self.wall_median_ms / n)

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: the relative spread of the windows."""
        return (self.p90_ms - self.p10_ms) / self.median_ms


def summarise(per_call_ms: list[float] | np.ndarray, inner: int,
              wall_ms: list[float] | None = None) -> Timing:
    """Median and p10/p90 of per-call times, one value per timed window."""
    a = np.asarray(per_call_ms, dtype=float)
    p10, med, p90 = np.percentile(a, [10, 50, 90])
    wall = float(np.median(wall_ms)) if wall_ms else None
    return Timing(float(med), float(p10), float(p90), int(a.size), int(inner), wall)


def set_cpu_threads(threads: int) -> int:
    """Fix the intra-op thread count (CPU timings depend on it) and return it."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def warm_gpu(seconds: float = 2.0) -> None:
    """Keep the GPU busy for ``seconds`` so its clocks leave idle before the first timing."""
    a = torch.randn(4096, 4096, device="cuda")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _pick_inner(fn: Callable[[], object], device: str, s: TimerSettings) -> int:
    """Calls per window, from short pilot runs (after warm-up).

    The fastest of three pilots, so a pilot that another process preempted does not
    shrink every window; a call longer than a window is timed alone at once.
    """
    n, best = 3, float("inf")
    for i in range(3):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(n if i else 1):
            fn()
        _sync(device)
        best = min(best, (time.perf_counter() - t0) * 1e3 / (n if i else 1))
        if best >= s.window_ms:
            return 1
    return int(min(s.max_inner, max(1, math.ceil(s.window_ms / max(best, 1e-4)))))


def time_callable(fn: Callable[[], object], device: str, settings: TimerSettings) -> Timing:
    """Steady-state time of one call of ``fn`` (already placed on ``device``).

    Runs under ``torch.inference_mode``. On CUDA the windows are timed with CUDA events
    and synchronised only at their end; on the CPU with ``settings.cpu_clock`` (the
    caller fixes the thread count, see :func:`set_cpu_threads`).

    Args:
        fn: a no-argument callable (a block or a model bound to its input).
        device: ``"cpu"`` or ``"cuda"``.
        settings: repeats, warm-up and window length.

    Returns:
        Per-call median, p10 and p90 over the windows.
    """
    with torch.inference_mode():
        for _ in range(settings.warmup):
            fn()
        inner = _pick_inner(fn, device, settings)
        times: list[float] = []
        if device == "cuda":
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            for _ in range(settings.repeats):
                torch.cuda.synchronize()  # an empty queue, so the window starts now
                start.record()
                for _ in range(inner):
                    fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / inner)
            return summarise(times, inner)
        if settings.cpu_clock == "thread" and torch.get_num_threads() != 1:
            raise ValueError("cpu_clock 'thread' needs one intra-op thread (torch.set_num_threads(1)); "
                             "use cpu_clock 'wall' with more threads")
        walls: list[float] = []
        for _ in range(settings.repeats):
            c0, w0 = time.thread_time(), time.perf_counter()
            for _ in range(inner):
                fn()
            c1, w1 = time.thread_time(), time.perf_counter()
            walls.append((w1 - w0) * 1e3 / inner)
            times.append((c1 - c0) * 1e3 / inner)
    return summarise(times if settings.cpu_clock == "thread" else walls, inner, walls)


def cuda_graph(fn: Callable[[], object], calls: int = 1) -> Callable[[], None]:
    """Capture ``calls`` back-to-back calls of ``fn`` into one CUDA graph.

    Returns a callable that replays the graph. With ``calls > 1`` the graph launch is
    shared by several calls, as inside a whole-model graph, and the caller divides.

    Args:
        fn: a no-argument callable whose inputs are static tensors on the GPU.
        calls: how many calls the graph holds.
    """
    with torch.inference_mode():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # capture needs a warm-up on a side stream
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outs = [fn() for _ in range(calls)]
        torch.cuda.synchronize()
    keep = (graph, outs)  # the outputs live in the graph's memory pool: hold on to them

    def replay() -> None:
        keep[0].replay()

    return replay


def time_graph(fn: Callable[[], object], settings: TimerSettings, calls: int = 1) -> Timing:
    """Like :func:`time_callable`, for ``calls`` calls of ``fn`` captured in one CUDA graph.

    Returns the time of one call (window time / replays / ``calls``).
    """
    return time_callable(cuda_graph(fn, calls), "cuda", settings).per(calls)
