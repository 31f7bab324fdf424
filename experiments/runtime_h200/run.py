"""GPT-2 small's shape served three ways on one GPU, against the memory-bandwidth floor.

Measures, in one process on one GPU (bf16, context 1024, the `gpt2s` space's baseline:
12 layers, 768 wide, 12 heads, FFN 3072, vocabulary 16384):

- the HBM bandwidth of this GPU (a large device-to-device copy, bytes read + written);
- decode time per token at batch 1 and 32 and prefill of a 512-token prompt at batch 1,
  in the modes of the latency tables: ``graph`` (the model module by module, replayed as
  a CUDA graph) and ``fused`` (``nas.fused``: q/k/v in one product, compiled blocks,
  replayed as a CUDA graph), plus ``whole`` (the whole decode step compiled as one
  graph, for reference: the fusion a per-block table cannot see);
- the floor of a decode step: bytes it must read (weights once, plus the KV cache)
  over the measured bandwidth, and each time's ratio to it;
- where a fused step's time goes: GPU kernel time by kind (matrix products, attention,
  the rest) from the profiler over graph replays, and the gaps between kernels;
- a few grouped-query and attention-free variants of the baseline in the fused mode;
- training throughput of the baseline with the project's training step (bf16 autocast,
  batch 16 x 1024 random tokens), eager and with ``torch.compile``;
- with ``--corpus-bundle``, the project's training loop on the real Linux corpus: the
  bundle unpacked and prepared here, then the baseline trained by ``nas.supernet.loop.fit``
  (``train_loop.py``).

Every result is a row of ``runtime.csv`` in ``--out``; rows already there are skipped, so
a run cut short resumes. ``--smoke`` runs on the CPU with a tiny bundle and model, and
skips the stages that need CUDA. Usage (repository root)::

    python experiments/runtime_h200/run.py --out experiments/runtime_h200 \
        --corpus-bundle .corpus/linux/linux-c-6.1.176-1.tar.xz
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from nas.environment import environment  # noqa: E402
from nas.latency.blocks import time_model  # noqa: E402
from nas.latency.decode import STEPS, make_decode_step  # noqa: E402
from nas.latency.floor import bandwidth_gbps, step_bytes  # noqa: E402
from nas.latency.measure import TimerSettings, cuda_graph, time_callable, warm_gpu  # noqa: E402
from nas.latency.spec import Workload  # noqa: E402
from nas.space import ArchConfig, load_space  # noqa: E402
from train_loop import LoopSettings, committed_sha256, smoke_bundle, train_loop_stage  # noqa: E402

FIELDS = ["what", "arch", "mode", "batch_size", "seq_len", "median_ms", "p10_ms", "p90_ms",
          "floor_ms", "ratio", "extra"]
TIMER = TimerSettings(repeats=15, warmup=5, window_ms=50.0)
STAGES = ("decode", "prefill", "train", "autotune", "train-loop")


def whole_model(model):
    """Serve ``model`` with its whole decode step compiled as one graph (for reference)."""
    model.decode = torch.compile(model.decode, fullgraph=True)
    return model


def autotuned(model):
    """Serve ``model`` by the fused runtime, blocks compiled in max-autotune mode (Triton
    matrix products with the bias, GELU and residual fused into them)."""
    from nas.fused import FusedGPT
    return FusedGPT(model, mode="max-autotune-no-cudagraphs")


def kernel_breakdown(fn, replays: int = 20) -> dict:
    """GPU kernel time of one call of ``fn`` (a graph replay), by kind, from the profiler."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            fn()
        torch.cuda.synchronize()
    kinds: dict[str, float] = {}
    count = 0
    for e in prof.events():
        if e.device_type.name != "CUDA":
            continue
        name = e.name.lower()
        kind = ("gemm" if any(k in name for k in ("gemm", "gemv", "cutlass", "sm90", "xmma", "splitk"))
                else "attention" if any(k in name for k in ("attention", "fmha", "flash", "softmax"))
                else "triton" if "triton" in name else "other")
        kinds[kind] = kinds.get(kind, 0.0) + e.device_time / 1e3 / replays
        count += 1
    kinds["kernels"] = count / replays
    return kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stages", default=",".join(STAGES),
                    help=f"comma-separated, of {', '.join(STAGES)} (default: all)")
    ap.add_argument("--skip-train", action="store_true", help="leave out the stage train")
    ap.add_argument("--corpus-bundle", type=Path,
                    help="the corpus_linux bundle (.tar.xz) for the stage train-loop")
    ap.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()),
                    help="where the bundle is unpacked and prepared (a new folder, removed after)")
    ap.add_argument("--loop-steps", type=int, default=60)
    ap.add_argument("--smoke", action="store_true",
                    help="on the CPU: a tiny bundle (unless given) and model; CUDA stages skipped")
    args = ap.parse_args()
    stages = [x for x in args.stages.split(",") if x and not (args.skip_train and x == "train")]
    if unknown := sorted(set(stages) - set(STAGES)):
        ap.error(f"--stages: {', '.join(unknown)} unknown; allowed: {', '.join(STAGES)}")
    device = "cpu" if args.smoke else "cuda"
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "runtime.csv"
    done = set()
    if path.exists():
        with open(path) as f:
            done = {(r["what"], r["arch"], r["mode"], r["batch_size"]) for r in csv.DictReader(f)}
    new = not path.exists()
    out = open(path, "a", newline="")
    w = csv.DictWriter(out, FIELDS)
    if new:
        w.writeheader()

    def record(**row):
        w.writerow({k: row.get(k, "") for k in FIELDS})
        out.flush()
        print(" ".join(f"{k}={row[k]}" for k in FIELDS if k in row and k != "extra"),
              row.get("extra", ""), flush=True)

    (args.out / "environment.json").write_text(json.dumps(environment(device), indent=1, default=str))
    on_gpu = [x for x in stages if x != "train-loop"]
    if on_gpu and device != "cuda":
        print(f"note: stages {', '.join(on_gpu)} skipped: they need CUDA", flush=True)
    elif on_gpu:
        gpu_stages(on_gpu, done, record)
    if "train-loop" in stages:
        corpus_stage(args, done, record)
    out.close()


def corpus_stage(args, done, record) -> None:
    """The training loop on the real corpus (``train_loop.py``); tiny on a CPU with --smoke."""
    args.scratch.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        arch = ArchConfig(n_layer=2, d_model=32, n_head=(2, 2), d_ff=(64, 64), head_dim=16,
                          vocab_size=16384, block_size=32)  # the committed tokenizer's ids
        settings = LoopSettings(batch_size=4, steps=6, log_every=2, device="cpu", modes=(False,))
        print("note: train-loop with compile skipped in --smoke (tests/test_train.py checks "
              "compiled training; a CPU compile outlasts a smoke run)", flush=True)
        # The real bundle is checked against the committed corpus; a made-up one is not.
        expected = committed_sha256() if args.corpus_bundle else None
        with tempfile.TemporaryDirectory(prefix="runtime_h200_smoke.", dir=args.scratch) as tmp:
            bundle = args.corpus_bundle or smoke_bundle(Path(tmp))
            train_loop_stage(bundle, args.scratch, arch, settings, expected, done, record)
        return
    if args.corpus_bundle is None:
        print("note: stage train-loop skipped: no --corpus-bundle", flush=True)
        return
    arch = load_space("gpt2s").baseline_arch("bf16")
    train_loop_stage(args.corpus_bundle, args.scratch, arch, LoopSettings(steps=args.loop_steps),
                     committed_sha256(), done, record)


def gpu_stages(stages, done, record) -> None:
    """The stages on CUDA: bandwidth, decode, prefill, train (random tokens), autotune."""
    warm_gpu()
    bw = bandwidth_gbps()
    record(what="bandwidth", arch="copy 4 GiB", mode="", batch_size=0, seq_len=0,
           median_ms=0, extra=f"{bw:.0f} GB/s")
    space = load_space("gpt2s")
    base = space.baseline_arch("bf16")
    variants = {
        "baseline": base,
        "gqa4": space.make(12, 768, [12] * 12, [3072] * 12, "bf16", [4] * 12),
        "gqa1": space.make(12, 768, [12] * 12, [3072] * 12, "bf16", [1] * 12),
        "half-no-attn": space.make(12, 768, [12, 0] * 6, [3072] * 12, "bf16", [12, 0] * 6),
        "L6": space.make(6, 768, [12] * 6, [3072] * 6, "bf16"),
    }
    t0 = time.time()
    for name, arch in variants.items() if "decode" in stages else ():
        modes = ("graph", "fused", "whole") if name == "baseline" else ("fused",)
        for B in (1, 32):
            floor = step_bytes(arch, B, 1024) / (bw * 1e9) * 1e3
            for mode in modes:
                if ("decode", name, mode, str(B)) in done:
                    continue
                if mode == "whole":
                    fn = cuda_graph(make_decode_step(arch, batch_size=B, context=1024,
                                                     device="cuda", serve=whole_model))
                    t = time_callable(fn, "cuda", TIMER).per(STEPS)
                else:
                    wl = Workload("cuda", B, 1024, ("bf16",), mode=mode, phase="decode")
                    t = time_model(arch, wl, TIMER)
                extra = ""
                if mode == "fused" and name == "baseline":
                    fn = cuda_graph(make_decode_step(arch, batch_size=B, context=1024,
                                                     device="cuda", fused=True))
                    kb = kernel_breakdown(fn)
                    extra = json.dumps({k: round(v / STEPS, 5) for k, v in kb.items()})
                record(what="decode", arch=name, mode=mode, batch_size=B, seq_len=1024,
                       median_ms=round(t.median_ms, 5), p10_ms=round(t.p10_ms, 5),
                       p90_ms=round(t.p90_ms, 5), floor_ms=round(floor, 5),
                       ratio=round(t.median_ms / floor, 3), extra=extra)
        print(f"[{time.time() - t0:.0f} s]", flush=True)
    for mode in ("graph", "fused") if "prefill" in stages else ():
        if ("prefill", "baseline", mode, "1") in done:
            continue
        wl = Workload("cuda", 1, 512, ("bf16",), mode=mode, phase="prefill")
        t = time_model(base, wl, TIMER)
        record(what="prefill", arch="baseline", mode=mode, batch_size=1, seq_len=512,
               median_ms=round(t.median_ms, 5), p10_ms=round(t.p10_ms, 5),
               p90_ms=round(t.p90_ms, 5))
    if "train" in stages:
        train_throughput(base, done, record)
    if "autotune" in stages:
        autotuned_decode(base, bw, done, record)


def autotuned_decode(arch, bw: float, done, record) -> None:
    """The baseline's fused decode with the blocks compiled in max-autotune mode."""
    for B in (1, 32):
        if ("decode", "baseline", "fused-autotune", str(B)) in done:
            continue
        fn = make_decode_step(arch, batch_size=B, context=1024, device="cuda", serve=autotuned)
        t = time_callable(cuda_graph(fn), "cuda", TIMER).per(STEPS)
        floor = step_bytes(arch, B, 1024) / (bw * 1e9) * 1e3
        record(what="decode", arch="baseline", mode="fused-autotune", batch_size=B,
               seq_len=1024, median_ms=round(t.median_ms, 5), p10_ms=round(t.p10_ms, 5),
               p90_ms=round(t.p90_ms, 5), floor_ms=round(floor, 5),
               ratio=round(t.median_ms / floor, 3))


def train_throughput(arch, done, record, B: int = 16, T: int = 1024, steps: int = 30) -> None:
    """Tokens/s of the project's training step on the baseline, eager and compiled."""
    from nas.model import GPT
    from nas.supernet.step import amp_context, train_step
    for mode in ("eager", "compile"):
        if ("train", "baseline", mode, str(B)) in done:
            continue
        torch.manual_seed(0)
        model = GPT(arch).cuda().train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=True)
        run = torch.compile(model) if mode == "compile" else model
        x = torch.randint(0, arch.vocab_size, (B, T), device="cuda")
        y = torch.randint(0, arch.vocab_size, (B, T), device="cuda")
        amp = amp_context("cuda")
        for _ in range(5):
            train_step(run, opt, x, y, [arch], 0.0, 1.0, amp)
        torch.cuda.synchronize()
        times = []
        for _ in range(steps):
            t = time.perf_counter()
            train_step(run, opt, x, y, [arch], 0.0, 1.0, amp)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        times.sort()
        med = times[len(times) // 2]
        record(what="train", arch="baseline", mode=mode, batch_size=B, seq_len=T,
               median_ms=round(med * 1e3, 3), p10_ms=round(times[len(times) // 10] * 1e3, 3),
               p90_ms=round(times[9 * len(times) // 10] * 1e3, 3),
               extra=f"{B * T / med:.0f} tokens/s")
        del model, opt, run
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
