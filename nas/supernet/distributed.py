"""Data-parallel supernet training over the processes ``torchrun`` starts.

Every rank draws the same global batch offsets and the same sub-networks from the same
seeded generators and trains on its own rows of the batch (``World.rows``), so N ranks
see exactly the data and the sandwich that one process sees at the same global batch,
and a checkpoint's single data and architecture RNG state resumes the run on any
number of ranks. Only dropout draws differ by rank (``seed_rank``).

Gradients are averaged once per optimizer step, after every sub-network's backward
(:class:`GradSync`): one all-reduce over one flat buffer. DistributedDataParallel would
reduce at every backward of the sandwich, or, with ``no_sync`` on all but the last,
need ``find_unused_parameters=True`` (an autograd-graph walk every step) because the
last sub-network does not use every weight; its gain, overlapping the reduction with
that last backward, is small next to four forward/backward passes (on two H200s the
reduction and the ranks' lockstep cost 4.6 ms of a 57 ms step: experiments/ddp_h200).

Library code never starts a process group: :func:`start` is called by the command.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from nas.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Whether this rank writes checkpoints and logs (rank 0)."""
        return self.rank == 0

    @classmethod
    def current(cls) -> "World":
        """The started process group's world, or one process when none is started."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def rows(self, batch_size: int) -> slice:
        """This rank's rows of a global batch of ``batch_size`` windows."""
        check_batch(batch_size, self.size)
        per = batch_size // self.size
        return slice(self.rank * per, (self.rank + 1) * per)


def launched_size() -> int:
    """How many processes ``torchrun`` started (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_batch(batch_size: int, size: int) -> None:
    """Refuse a global batch that the processes cannot share equally."""
    if batch_size % size:
        raise ConfigError(f"train.batch_size: {batch_size} is the global batch and must divide "
                          f"evenly among the {size} processes; give a multiple of {size}")


def start(device: str) -> World:
    """Join ``torchrun``'s process group: NCCL with one GPU per process, gloo on CPUs.

    Args:
        device: the resolved training device, 'cuda' or 'cpu'.

    Returns:
        This process's world; one process (no group started) when not launched by
        ``torchrun`` or launched with a single process.

    Raises:
        ConfigError: more processes on this host than visible GPUs.
    """
    size = launched_size()
    if size == 1:
        return World()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(f"torchrun: local rank {local} has no GPU of its own "
                              f"({torch.cuda.device_count()} visible); start at most "
                              f"{torch.cuda.device_count()} processes per node")
        torch.cuda.set_device(local)  # "cuda" now means this rank's GPU
        dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    else:
        dist.init_process_group("gloo")
    return World(rank, size)


def stop() -> None:
    """Leave the process group, if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class GradSync:
    """Averages the summed sandwich gradients over the ranks in one all-reduce.

    The gradients are packed into one flat buffer, reduced, and the parameters' ``.grad``
    become views of it (no copy back). A parameter that no sub-network of the step used
    keeps ``.grad = None`` on every rank alike, since every rank trains the same
    sub-networks, so the optimizer skips it as it would in one process.
    """

    def __init__(self, model: torch.nn.Module, world: World):
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.scale = 1.0 / world.size

    def __call__(self) -> None:
        live = [p for p in self.params if p.grad is not None]
        flat = torch.cat([p.grad.reshape(-1) for p in live])
        dist.all_reduce(flat)  # a sum: gloo has no average
        flat.mul_(self.scale)
        for p, g in zip(live, flat.split([p.numel() for p in live])):
            p.grad = g.view_as(p)


def broadcast_weights(model: torch.nn.Module) -> None:
    """Give every rank rank 0's weights (they start equal from the shared seed anyway)."""
    with torch.no_grad():
        for t in model.state_dict().values():
            dist.broadcast(t, src=0)


def mean_over_ranks(x: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of ``x`` over the ranks: the global batch's mean of per-rank means."""
    if world.size == 1:
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / world.size


def seed_rank(seed: int, rank: int, step: int) -> None:
    """Seed a rank's own dropout stream from the run's seed, its rank and the step."""
    torch.manual_seed(((seed * 1_000_003 + rank) * 1_000_003 + step) % 2**63)


def rank_rng_state() -> dict[str, Any]:
    """This rank's dropout generator state (its GPU's only)."""
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def set_rank_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"].cpu())
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"].cpu())


def gather_rank_rng(world: World) -> list[dict[str, Any]] | None:
    """Every rank's dropout state, on rank 0 (a collective: every rank calls it)."""
    if world.size == 1:
        return None
    out: list[Any] | None = [None] * world.size if world.main else None
    dist.gather_object(rank_rng_state(), out, dst=0)
    return out
