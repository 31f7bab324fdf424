"""The ``train-loop`` stage of ``run.py``: the project's training loop on the real corpus.

From the Linux bundle of ``experiments/corpus_linux`` (32.7 MiB of C, carried with the
checkout to a GPU machine, which has no network):

1. unpack it into a folder of its own under ``--scratch`` and prepare it with the
   committed ``tokenizer.json`` (``nas.data.prepare``), timed; its ``corpus_sha256`` is
   checked against the committed manifest (the same tokens as every other run's);
2. time ``get_batch`` of one training batch of that corpus as the loop calls it (the
   shard opened anew, the windows read, copied to the device), the host's side of a step;
3. train GPT-2 small's shape alone with the loop every training uses
   (``nas.supernet.loop.fit``: bf16 autocast on CUDA, batches of the corpus, AdamW),
   eager and through ``torch.compile`` (``TrainConfig.compile``), and record the loop's
   own tokens/s.

The loop computes tokens/s over the steps since it started, compilation included; its
log rows (every ``log_every`` steps) give the rate after the first of them too, which is
what a long run sustains. Nothing here imports Hydra, Optuna or tqdm.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from nas.data.corpus import PreparedCorpus, load_prepared
from nas.data.prepare import PrepareOptions, prepare
from nas.model import GPT
from nas.space import ArchConfig
from nas.supernet.data import get_batch
from nas.supernet.loop import Run, fit
from nas.supernet.recipe import TrainConfig, make_optimizer
from nas.supernet.step import sync

CORPUS_LINUX = Path(__file__).resolve().parents[1] / "corpus_linux"
TOKENIZER = CORPUS_LINUX / "tokenizer.json"


@dataclass(frozen=True)
class LoopSettings:
    """How long and on what the loop is measured.

    Attributes:
        batch_size: windows per step (each of the architecture's context length).
        steps: steps of each run; the first ``log_every`` are not in the sustained rate.
        log_every: the loop's log interval: its rows are the clock readings.
        device: "cuda" or "cpu" (the smoke run).
        modes: the runs, by ``TrainConfig.compile``.
    """

    batch_size: int = 16
    steps: int = 60
    log_every: int = 10
    device: str = "cuda"
    modes: tuple[bool, ...] = (False, True)


def committed_sha256() -> str:
    """The ``corpus_sha256`` of the committed manifest of the Linux corpus."""
    return json.loads((CORPUS_LINUX / "manifest.json").read_text())["corpus_sha256"]


def unpack(bundle: Path, into: Path) -> Path:
    """Extract ``bundle`` (a .tar.xz of one folder, ``src/``) into ``into``; its ``src``."""
    # The "data" filter refuses links and paths leaving ``into`` (Python >= 3.11.4, 3.12).
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(bundle, "r:xz") as tar:
        tar.extractall(into, **safe)
    if not (into / "src").is_dir():
        raise SystemExit(f"error: {bundle} holds no src/ folder; is it a corpus_linux bundle?")
    return into / "src"


def prepare_bundle(bundle: Path, into: Path, expected: str | None) -> tuple[Path, dict[str, Any]]:
    """Unpack and prepare ``bundle`` in ``into``, timed; the corpus and what to record."""
    t0 = time.perf_counter()
    src = unpack(bundle, into)
    t1 = time.perf_counter()
    corpus, _ = prepare(PrepareOptions(source=str(src), out=into / "corpus", tokenizer=TOKENIZER,
                                       progress=False))
    t2 = time.perf_counter()
    m = json.loads((corpus / "manifest.json").read_text())
    info = {"bundle": bundle.name, "bundle_bytes": bundle.stat().st_size,
            "unpack_s": round(t1 - t0, 2), "prepare_s": round(t2 - t1, 2), "cpus": os.cpu_count(),
            "tokens": sum(t["tokens"] for t in m["totals"].values()),
            "corpus_sha256": m["corpus_sha256"], "committed_sha256": expected,
            "matches": None if expected is None else m["corpus_sha256"] == expected}
    return corpus, info


def time_get_batch(corpus: PreparedCorpus, batch_size: int, block_size: int, device: str,
                   n: int = 200) -> list[float]:
    """Host seconds of ``n`` batches drawn as the loop draws them, sorted."""
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(n + 10):  # the first ones page the shard's first windows in
        t = time.perf_counter()
        get_batch(corpus.part("train"), batch_size, block_size, generator=gen, device=device)
        if i >= 10:
            times.append(time.perf_counter() - t)
    sync(device)
    return sorted(times)


def loop_throughput(arch: ArchConfig, corpus: PreparedCorpus, cfg: TrainConfig) -> dict[str, Any]:
    """Train ``arch`` alone with ``fit``, set up as ``train_standalone`` sets it up.

    Returns:
        ``tokens_per_s_loop``: the loop's own figure, over all its steps;
        ``tokens_per_s``: the rate after its first log row (compilation and warm-up
        excluded), from the loop's own clock readings; ``step_ms``: that rate's time per
        step, per log interval; the training loss of the first and last rows.
    """
    device = cfg.device
    if device == "cuda":
        torch.set_float32_matmul_precision("high")
    torch.manual_seed(cfg.seed)
    fp32 = dataclasses.replace(arch, precision="fp32")  # trained in fp32 under bf16 autocast
    model = GPT(fp32, dropout=cfg.dropout).to(device)
    run = Run(model=model, opt=make_optimizer(model, cfg), pick=lambda: [fp32],
              arch_rng=random.Random(cfg.seed), data_rng=torch.Generator().manual_seed(cfg.seed))
    fit(run, corpus, cfg, device, {"arch": fp32}, None, False, desc="train-loop", track="arch")
    per_step = cfg.batch_size * arch.block_size  # one architecture, one process
    # A row's tokens_per_s is over the run so far; its tokens are its step's, so its clock
    # reads step * per_step / tokens_per_s.
    clock = [(r["step"], r["step"] * per_step / r["tokens_per_s"], r["loss"]) for r in run.history]
    steps = [b[0] - a[0] for a, b in zip(clock[:-1], clock[1:])]
    step_ms = sorted((b[1] - a[1]) / n * 1e3 for a, b, n in zip(clock[:-1], clock[1:], steps))
    (s0, c0, loss0), (s1, c1, loss1) = clock[0], clock[-1]
    out = {"tokens_per_s_loop": run.tokens_per_s, "tokens_per_s": (s1 - s0) * per_step / (c1 - c0),
           "step_ms": step_ms, "timed_steps": s1 - s0, "steps": run.step,
           "loss_first": loss0, "loss_last": loss1}
    del run, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def train_loop_stage(bundle: Path, scratch: Path, arch: ArchConfig, s: LoopSettings,
                     expected: str | None, done: set, record: Callable[..., None]) -> None:
    """The stage: rows ``prepare``, ``get-batch`` and ``train-loop`` of ``runtime.csv``.

    Rows in ``done`` (keys ``(what, arch, mode, batch_size)`` as read back from the CSV)
    are not measured again; the corpus is prepared when any other row is missing.

    Args:
        bundle: the corpus bundle (.tar.xz of ``src/``).
        scratch: a folder for the unpacked bundle and its corpus, in a new folder of their
            own (deleted at the end).
        arch: the architecture trained (its ``block_size`` is the window length).
        s: the loop's settings.
        expected: the ``corpus_sha256`` the corpus must have (None: no check, a smoke run).
        done, record: the resume set and row writer of ``run.py``.
    """
    names = {False: "eager", True: "compile"}
    B, T = s.batch_size, arch.block_size
    keys = {"prepare": ("prepare", "corpus_linux", "tokenizer.json", "0"),
            "get-batch": ("get-batch", "corpus_linux", s.device, str(B)),
            **{names[c]: ("train-loop", "baseline", names[c], str(B)) for c in s.modes}}
    if all(k in done for k in keys.values()):
        return
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="runtime_h200.", dir=scratch) as tmp:
        path, info = prepare_bundle(bundle, Path(tmp), expected)
        if info["matches"] is False:
            print(f"warning: the corpus prepared here has corpus_sha256 {info['corpus_sha256']}, "
                  f"not the committed {expected}", flush=True)
        if keys["prepare"] not in done:
            record(what="prepare", arch="corpus_linux", mode="tokenizer.json", batch_size=0,
                   seq_len=0, median_ms=round((info["unpack_s"] + info["prepare_s"]) * 1e3),
                   extra=json.dumps(info))
        corpus = load_prepared(path, block_size=T, vocab_size=arch.vocab_size)
        if keys["get-batch"] not in done:
            t = time_get_batch(corpus, B, T, s.device)
            record(what="get-batch", arch="corpus_linux", mode=s.device, batch_size=B, seq_len=T,
                   median_ms=round(t[len(t) // 2] * 1e3, 4), p10_ms=round(t[len(t) // 10] * 1e3, 4),
                   p90_ms=round(t[9 * len(t) // 10] * 1e3, 4))
        for compiled in s.modes:
            if keys[names[compiled]] in done:
                continue
            cfg = TrainConfig.from_recipe("gpt2s", steps=s.steps, batch_size=B, eval_every=0,
                                          eval_batches=1, log_every=s.log_every, compile=compiled,
                                          device=s.device, data=str(path))
            r = loop_throughput(arch, corpus, cfg)
            ms = r.pop("step_ms")
            record(what="train-loop", arch="baseline", mode=names[compiled], batch_size=B, seq_len=T,
                   median_ms=round(ms[len(ms) // 2], 3),
                   p10_ms=round(ms[len(ms) // 10], 3), p90_ms=round(ms[9 * len(ms) // 10], 3),
                   extra=json.dumps({**{k: round(v, 4) if isinstance(v, float) else v
                                        for k, v in r.items()},
                                     "corpus_sha256_matches": info["matches"]}))


def smoke_bundle(into: Path, files: int = 80) -> Path:
    """A tiny bundle of made-up C files, laid out as the Linux one (``src/...``)."""
    rng = random.Random(0)
    words = ("static int void return struct if else for while unsigned long char const "
             "foo bar baz x y z ( ) { } ; = + - * /").split()
    for i in range(files):
        p = into / "src" / ("drivers" if i % 2 else "fs") / f"f{i:02d}.c"
        p.parent.mkdir(parents=True, exist_ok=True)
        lines = (" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(30))
        p.write_text(f"/* file {i} */\n" + "\n".join(lines) + "\n", encoding="utf-8")
    bundle = into / "smoke.tar.xz"
    with tarfile.open(bundle, "w:xz") as tar:
        tar.add(into / "src", arcname="src")
    return bundle
