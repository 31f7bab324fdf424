"""Measured latency tables, and the costs of an architecture predicted from them.

The costs a search minimises (pandas and numpy only, no torch)::

    from nas.latency import CostModel
    from nas.space import load_space
    space = load_space("shakespeare")
    costs = CostModel.for_target("h100-graph", space)        # conf/hardware/h100-graph.yaml
    costs = CostModel.for_target("h100-graph", space, batch_size=16)  # another batch's tables
    costs.prefill_ms(arch)        # forward pass over the prompt (the prefill table's tokens)
    costs.ttft_ms(arch)           # time to first token: the same, named for a request
    costs.decode_ms(arch)         # time per output token at the workload's context
    costs.request_ms(arch)        # TTFT + (N - 1) * TPOT, prompt P and N new tokens of the
    costs.request_ms(arch, 128, 128)   # workload, or given (P + N - 1 <= the context)
    costs.peak_memory_mb(arch)    # weights + KV cache + activations of one request, MiB
    costs.costs(arch)             # all of the above that its tables allow, by name

Each raises ``nas.errors.ConfigError`` (one line, with the command that builds what is
missing) instead of guessing: no table of that workload, an architecture outside the
table's space, or a precision it does not cover (the H100 decode tables cover bf16 and
fp16). ``CostModel(prefill=LatencyTable.load(...), decode=LatencyTable.load(...))``
composes any two tables of one device, batch size and mode.

One table (as the search has used it from the start)::

    from nas.latency import LatencyTable
    table = LatencyTable.load("latency_tables/cpu-tiny.csv", space=space, device="cpu")
    ms = table.predict_ms(arch)          # prefill table: forward latency, milliseconds
    table.phase, table.batch_size, table.seq_len, table.device, table.memory

Build, predict, validate and check (Hydra, ``conf/latency.yaml``)::

    python -m nas.latency build                        # hardware=cpu search_space=tiny
    python -m nas.latency build latency.phase=decode   # the target's decode table
    python -m nas.latency predict predict.arch=a.yaml
    python -m nas.latency validate                     # report in experiments/latency_<table>
    python -m nas.latency check                        # does the table hold on this machine?
    python experiments/latency_gpu/run.py              # the GPU prefill tables, without Hydra
    python experiments/latency_h100_decode/run.py      # the GPU decode tables, without Hydra

How: every block (``spec.py``) is the real module of ``nas.model`` timed back to back
(``measure.py``, ``blocks.py``; on one token against a KV cache for decode tables,
``decode.py``); a per-precision linear correction fitted on end-to-end measurements of
random architectures (``calibrate.py``) turns the sum of a model's blocks into its
latency; both live with the table (``files.py``), which the predictor loads and checks
(``table.py``), and ``validate.py`` checks the predictor on architectures drawn from
another seed. Decode tables also carry a peak-memory model (``memory.py``, measured by
``memory_measure.py``); whole requests are timed by ``request.py`` and composed in
``predict.py``; a target's workload is ``target.py`` and its tables' names ``naming.py``.
"""
from nas.latency.calibrate import Calibration
from nas.latency.predict import CostModel
from nas.latency.spec import BlockKey, Workload, arch_blocks, space_blocks
from nas.latency.table import LatencyTable
from nas.latency.target import Target

__all__ = ["BlockKey", "Calibration", "CostModel", "LatencyTable", "Target", "Workload",
           "arch_blocks", "space_blocks"]
