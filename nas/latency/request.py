"""Time whole requests: a prompt of ``P`` tokens, then ``N`` new tokens, as a server runs it.

A request is a prefill of the prompt (which fills the static KV cache and picks the first
new token: the time to first token) followed by ``N - 1`` generation steps
(``decode.step``), all against a cache of ``context`` positions. In graph mode the
prefill and the step are each captured once as a CUDA graph and replayed, as
latency-critical servers do; the whole request is timed between two CUDA events. These
timings check the composition ``TTFT(P) + (N - 1) * TPOT`` of a prefill and a decode
table (``predict.py``); no table is built from them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch

from nas.latency.prefill import standalone
from nas.latency.decode import step
from nas.latency.measure import TimerSettings, Timing, cuda_graph, time_callable
from nas.latency.spec import GRAPH_MODES

if TYPE_CHECKING:
    from nas.space import ArchConfig


def make_request(arch: ArchConfig, *, batch_size: int, prompt_len: int, new_tokens: int,
                 context: int, device: str, mode: str = "eager",
                 seed: int = 0) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """One request of ``arch``'s standalone model, and its prefill alone.

    Args:
        arch: the architecture, in its precision.
        batch_size: sequences served together.
        prompt_len: ``P``, tokens of each prompt.
        new_tokens: ``N``, tokens each sequence generates (the first one by the prefill).
        context: the KV cache's length; at least ``P + N - 1``.
        device: ``"cpu"`` or ``"cuda"`` (int8 stays on the CPU).
        mode: ``"eager"``, ``"graph"`` or ``"fused"`` (CUDA graphs of the fused runtime).
        seed: seeds the weights and the prompt.

    Returns:
        ``(request, prefill)``: no-argument callables running one whole request, and
        only its prefill (the time to first token).
    """
    if prompt_len + new_tokens - 1 > context:
        raise ValueError(f"a request of {prompt_len} + {new_tokens} tokens needs a context of "
                         f"{prompt_len + new_tokens - 1}; the cache has {context}")
    if new_tokens < 1 or prompt_len < 1:
        raise ValueError("prompt_len and new_tokens must be >= 1")
    model, on = standalone(arch, device, seed, fused=mode == "fused")
    cache = model.make_cache(batch_size, context)
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, arch.vocab_size, (batch_size, prompt_len), generator=g).to(on)
    idx = torch.zeros(batch_size, 1, dtype=torch.long, device=on)  # (B, 1): the next token

    def first() -> None:
        logits = model.prefill(prompt, cache)
        idx.copy_(logits[:, -1].argmax(-1, keepdim=True))

    def next_token() -> None:
        step(model, cache, idx)

    if mode in GRAPH_MODES:
        first, next_token = cuda_graph(first), cuda_graph(next_token)

    def request() -> None:
        first()
        for _ in range(new_tokens - 1):
            next_token()

    return request, first


def time_request(arch: ArchConfig, *, batch_size: int, prompt_len: int, new_tokens: int,
                 context: int, device: str, mode: str, timer: TimerSettings,
                 seed: int = 0) -> tuple[Timing, Timing]:
    """Measured time of one request and of its prefill alone (the time to first token).

    Args:
        arch, batch_size, prompt_len, new_tokens, context, device, mode, seed: as for
            :func:`make_request`.
        timer: repeats and warm-up; a request is longer than a window, so each window
            times one request.

    Returns:
        ``(request, ttft)`` timings in milliseconds.
    """
    request, first = make_request(arch, batch_size=batch_size, prompt_len=prompt_len,
                                  new_tokens=new_tokens, context=context, device=device,
                                  mode=mode, seed=seed)
    on = "cpu" if arch.precision == "int8" else device
    return time_callable(request, on, timer), time_callable(first, on, timer)
