"""Time a block or a whole model for a table's workload: the prefill builders
(``prefill.py``) or the decode ones (``decode.py``), eager or as CUDA graphs."""
from __future__ import annotations

from typing import TYPE_CHECKING

from nas.latency.decode import STEPS, make_decode_block, make_decode_step
from nas.latency.measure import TimerSettings, Timing, time_callable, time_graph
from nas.latency.prefill import make_block, make_model
from nas.latency.spec import GRAPH_MODES, BlockKey, Workload

if TYPE_CHECKING:
    from nas.space import ArchConfig, SearchSpace


def time_block(key: BlockKey, space: SearchSpace, workload: Workload, timer: TimerSettings,
               graph_calls: int = 10) -> Timing:
    """Measure one block of ``space`` for ``workload``.

    Args:
        key: the block.
        space: the search space (its head_dim, vocab_size, block_size).
        workload: device, batch size, sequence length, mode.
        timer: repeats, warm-up, window length.
        graph_calls: in graph mode, back-to-back calls captured in one CUDA graph, so the
            graph launch is shared as it is inside a whole-model graph.
    """
    sizes = dict(vocab_size=space.vocab_size, block_size=space.block_size,
                 head_dim=space.head_dim, batch_size=workload.batch_size, device=workload.device)
    fused = workload.mode == "fused"
    if workload.phase == "decode":
        # On a GPU the calls of one graph take distinct copies, out of reach of the L2
        # cache as the layers of a model are; a CPU table keeps one (its tiny models fit
        # in the CPU's caches whole, model and block alike).
        copies = graph_calls if workload.device == "cuda" else 1
        fn = make_decode_block(key, context=workload.seq_len, copies=copies, fused=fused,
                               **sizes)
    else:
        fn = make_block(key, seq_len=workload.seq_len, fused=fused, **sizes)
    if workload.mode in GRAPH_MODES:
        return time_graph(fn, timer, calls=graph_calls)
    return time_callable(fn, "cpu" if key.precision == "int8" else workload.device, timer)


def time_model(arch: ArchConfig, workload: Workload, timer: TimerSettings, seed: int = 0) -> Timing:
    """Measure ``arch`` end to end as a standalone model: a forward pass over the prompt
    (prefill), or one generation step (decode).

    Args:
        arch: the architecture, in its precision.
        workload: device, batch size, sequence length, mode (graph: one graph per call),
            phase.
        timer: repeats, warm-up, window length.
        seed: seeds the weights and the input.
    """
    on = "cpu" if arch.precision == "int8" else workload.device
    graph, fused = workload.mode in GRAPH_MODES, workload.mode == "fused"
    if workload.phase == "decode":
        fn = make_decode_step(arch, batch_size=workload.batch_size, context=workload.seq_len,
                              device=workload.device, seed=seed, fused=fused)
        t = time_graph(fn, timer) if graph else time_callable(fn, on, timer)
        return t.per(STEPS)
    fn = make_model(arch, batch_size=workload.batch_size, seq_len=workload.seq_len,
                    device=workload.device, seed=seed, fused=fused)
    if graph:
        return time_graph(fn, timer, calls=1)
    return time_callable(fn, on, timer)
