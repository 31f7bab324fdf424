"""Decode tables, peak memory and whole requests of ``h100-graph``, built and validated.

Needs only torch, numpy, pandas, matplotlib, pyyaml and tqdm (nvidia-ml-py for the
fingerprint, optional): no Hydra, no Optuna. From the repository root, on the GPU:

    python experiments/latency_h100_decode/run.py --batch 1 --batch 16 --out $OUT

For each batch size, in CUDA-graph mode, bf16 and fp16, the ``shakespeare`` space and
the workload of ``conf/hardware/h100-graph.yaml`` (prompt 128, 128 new tokens, context 256):

1. builds the prefill table of the prompt (``h100-shakespeare-graph-b<B>-t128.csv``);
2. builds the decode table (``h100-shakespeare-graph-decode-b<B>-c256.csv``): every block
   on one token against a cache of 256, 24 calibration models (``--calib-n``) per precision, and their
   peak memory (the memory model);
3. validates it on ``--val-n`` held-out architectures per precision (seed 2000): time per
   output token, peak memory of each, and ``--requests`` of them per precision timed as
   whole requests against ``TTFT + 127 * TPOT``; report in ``<reports>/b<B>/``.

Every step resumes: a build measures only what its table lacks, a validation with a
report is skipped. After each step everything is packed into ``<out>/results.tgz`` (a
call of the device tool brings back only a few files), so a run stopped at its time
limit keeps what it finished. ``--check`` instead runs ``nas.latency.check`` on every
table found, for a second machine. ``--smoke`` runs it all with the ``tiny`` space and a
fast timer, on the GPU in graph mode when there is one, else on the CPU (a test of the
script and of the CUDA-graph paths, not a measurement). ``--validate-only SUBDIR``
builds nothing and validates the committed tables on a fresh held-out set
(``--val-seed``), for a correction refitted offline from the tables' own calibration
models (``nas.latency.build.refit_calibration``).
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nas.latency.build import build_table  # noqa: E402
from nas.latency.measure import TimerSettings  # noqa: E402
from nas.latency.spec import Workload  # noqa: E402
from nas.latency.target import Target  # noqa: E402
from nas.latency.validate import validate  # noqa: E402
from nas.space import load_space  # noqa: E402

# Seconds each step took on an H100 at batch 1 (estimates until measured); a step is
# started only when what is left of the budget covers it.
COST_S = {"prefill": 70, "decode": 90, "validate": 200}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, action="append", help="batch sizes (default: 1)")
    ap.add_argument("--precisions", default="bf16,fp16")
    ap.add_argument("--space", default="shakespeare", help="search space")
    ap.add_argument("--target", default="h100-graph", help="hardware target (conf/hardware)")
    ap.add_argument("--calib-seed", type=int, default=1000)
    ap.add_argument("--tables-dir", default="latency_tables")
    ap.add_argument("--reports-dir", default="experiments/latency_h100_decode")
    ap.add_argument("--out", default=None, help="where results.tgz goes (the device's $OUT)")
    ap.add_argument("--calib-n", type=int, default=24)
    ap.add_argument("--val-n", type=int, default=50)
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--window-ms", type=float, default=5.0)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--budget-s", type=float, default=540.0)
    ap.add_argument("--check", action="store_true", help="check every table instead")
    ap.add_argument("--check-n", type=int, default=20)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--val-seed", type=int, default=2000, help="seed of the held-out set")
    ap.add_argument("--validate-only", metavar="SUBDIR", default=None,
                    help="build nothing: validate the tables as they are (seed --val-seed) "
                         "into <reports>/SUBDIR/b<B>/")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    command = f"python {Path(__file__).resolve().relative_to(ROOT)} " + " ".join(
        shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))
    batches = a.batch or [1]
    tables, reports = Path(a.tables_dir), Path(a.reports_dir)
    out = Path(a.out) if a.out else None
    if a.smoke:
        import torch
        gpu = torch.cuda.is_available()
        space, device, mode = load_space("tiny"), ("cuda" if gpu else "cpu"), ("graph" if gpu else "eager")
        precisions = ("bf16", "fp16") if gpu else ("fp32", "int8")
        timer = TimerSettings(repeats=3, warmup=1, window_ms=1.0, passes=2,
                              cpu_clock="wall" if gpu else "thread")
        target = Target("smoke", device, str(tables / "smoke-tiny.csv"), prompt_len=16,
                        new_tokens=8, context=32, mode=mode)
        a.calib_n, a.val_n, a.requests = 6, 6, 3
    else:
        import torch
        if not torch.cuda.is_available():
            print("error: no CUDA GPU visible; use --smoke on a CPU", file=sys.stderr)
            return 2
        space = load_space(a.space)
        target = Target.load(a.target)
        target = Target(target.name, target.device, str(tables / Path(target.table).name),
                        target.batch_size, target.prompt_len, target.new_tokens, target.context,
                        target.mode)
        device, mode = "cuda", target.mode
        precisions = tuple(a.precisions.split(","))
        timer = TimerSettings(repeats=a.repeats, warmup=10, window_ms=a.window_ms,
                              cpu_clock="wall", passes=a.passes)
    r = target.resolved(space.block_size)
    progress = not a.no_progress
    log = {"command": command, "host": platform.node(), "steps": [], "stopped": None}

    def left() -> float:
        return a.budget_s - (time.perf_counter() - t0)

    def step(name: str, cost: float, fn) -> bool:
        if left() < cost:
            log["stopped"] = f"{name}: needs ~{cost:.0f} s, {left():.0f} s left"
            print(f"== stop before {log['stopped']}; run the same command again to go on")
            return False
        s0 = time.perf_counter()
        print(f"\n== {name} ({left():.0f} s of budget left)", flush=True)
        fn()
        log["steps"].append({"step": name, "seconds": round(time.perf_counter() - s0, 1)})
        pack(out, tables, reports, log)
        return True

    if a.check:
        from nas.latency.check import check
        from nas.latency.table import LatencyTable
        reports.mkdir(parents=True, exist_ok=True)
        for B in batches:
            for phase in ("decode", "prefill"):
                path = target.table_of(phase, space.block_size, B)
                if not path.exists():
                    continue
                table = LatencyTable.load(path, space=space)
                dest = reports / f"check_{platform.node() or 'host'}_{path.stem}.json"
                step(f"check {path.name}", 30 * B ** 0.3, lambda: check(
                    table, space, n=a.check_n, timer=timer, progress=progress, out=dest))
        return 0

    if a.validate_only:
        from nas.latency.table import LatencyTable
        for B in batches:
            pre = target.table_of("prefill", space.block_size, B)
            dec = target.table_of("decode", space.block_size, B)
            rep = reports / a.validate_only / f"b{B}"
            if (rep / "summary.json").exists():
                print(f"== {rep}/summary.json exists: validation of batch {B} done")
                continue

            def fresh() -> None:
                rep.mkdir(parents=True, exist_ok=True)
                validate(LatencyTable.load(dec, space=space, precisions=precisions), space,
                         precisions, n=a.val_n, seed=a.val_seed, timer=timer, out_dir=rep,
                         command=command, noise_models=3, noise_repeats=5, progress=progress,
                         prefill=LatencyTable.load(pre, space=space, precisions=precisions),
                         requests=a.requests, new_tokens=r.new_tokens)

            if not step(f"validate {dec.name} (seed {a.val_seed})",
                        COST_S["validate"] * (1.0 if B == 1 else 1.6) * 0.45, fresh):
                break
        log["total_seconds"] = round(time.perf_counter() - t0, 1)
        pack(out, tables, reports, log)
        print(json.dumps(log, indent=2))
        return 3 if log["stopped"] else 0

    for B in batches:
        pre = target.table_of("prefill", space.block_size, B)
        dec = target.table_of("decode", space.block_size, B)
        scale = 1.0 if B == 1 else 1.6
        w_pre = Workload(device, B, r.prompt_len, precisions, mode)
        w_dec = Workload(device, B, r.context, precisions, mode, phase="decode",
                         prompt_len=r.prompt_len)
        built = {}

        def build(path: Path, w: Workload) -> None:
            built[path] = build_table(path, space, w, timer, calibration_n=a.calib_n,
                                      calibration_seed=a.calib_seed, command=command,
                                      progress=progress)

        if not step(f"build {pre.name}", COST_S["prefill"] * scale, lambda: build(pre, w_pre)):
            break
        if not step(f"build {dec.name}", COST_S["decode"] * scale, lambda: build(dec, w_dec)):
            break
        rep = reports / f"b{B}"
        if (rep / "summary.json").exists():
            print(f"== {rep}/summary.json exists: validation of batch {B} done")
            continue

        def check_it() -> None:
            rep.mkdir(parents=True, exist_ok=True)
            validate(built[dec], space, precisions, n=a.val_n, seed=a.val_seed, timer=timer,
                     out_dir=rep, command=command, noise_models=3, noise_repeats=5,
                     progress=progress, prefill=built[pre], requests=a.requests,
                     new_tokens=r.new_tokens)

        if not step(f"validate {dec.name}", COST_S["validate"] * scale, check_it):
            break
    log["total_seconds"] = round(time.perf_counter() - t0, 1)
    pack(out, tables, reports, log)
    print(json.dumps(log, indent=2))
    return 3 if log["stopped"] else 0


def pack(out: Path | None, tables: Path, reports: Path, log: dict) -> None:
    """Everything written so far into ``<out>/results.tgz`` (written whole, then renamed)."""
    if out is None:
        return
    reports.mkdir(parents=True, exist_ok=True)
    (reports / f"run_log_{platform.node() or 'host'}.json").write_text(json.dumps(log, indent=2))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.tgz.part"
    with tarfile.open(tmp, "w:gz") as tar:
        for folder in (tables, reports):
            if folder.exists():
                tar.add(folder, arcname=folder.as_posix().lstrip("/"))
    tmp.replace(out / "results.tgz")


if __name__ == "__main__":
    sys.exit(main())
