"""The headline on the H200: a searched `gpt2s` model against GPT-2 small's shape, uniform
shrinks, uniform grouped-query attention and the LTS parameter-count proxy; and the
ranking study of the supernet against that proxy. One resumable run.

From the repository root on a GPU machine (Optuna installed; Hydra not needed)::

    python experiments/headline_h200/run.py --bundle .corpus/linux/linux-c-6.1.176-1.tar.xz --deadline-s 530

prepares the Linux corpus from its bundle when it is not there yet, then does as much as
the deadline allows, and continues where it stopped when run again with the same
``--state`` (one JSON line per finished job; ``plan.py`` says which jobs exist):

1. **Supernet** of `gpt2s` (``conf/train/gpt2s_supernet.yaml``).
2. **Searches** on ``hardware=h200-fused``: ``val_loss`` (the supernet's) and ``decode_ms``
   (the decode table at batch 32, context 1024) within a decode budget of half the
   baseline's predicted decode time; and the same search with the LTS proxy
   (``-decoder_params / 1e6``) as the accuracy objective.
3. **References**: the baseline, uniform shrinks, uniform grouped-query attention and
   both together (``plan.Plan.references``).
4. **Ranking study**: half from near the search's front, half stratified by size, each
   trained alone; the supernet's scores of them.
5. **Headline models** (references, the proxy's pick, the search's top 3) trained alone
   with 2 seeds (``conf/train/gpt2s.yaml``), and each timed alone on the GPU in the fused
   runtime: decode at batch 32 and 1, whole requests.

Trainings share the GPU (``--jobs`` worker processes); a latency job runs alone. Jobs
that need the h200-fused tables wait until they exist (``experiments/latency_h200_gpt2s``).
``--smoke`` runs the whole pipeline on the CPU with the `tiny_gqa` space, a corpus
prepared here from tiny-shakespeare and tables measured here. ``report.py`` turns the
state into the CSVs, plot and tables.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from plan import ROOT, SMOKE_VOCAB, SUPERNET, Plan, Setup, job_id, load_state, smoke_setup  # noqa: E402

CORPUS = ROOT / ".corpus" / "linux"


def prepare_linux(bundle: Path, log: Any) -> None:
    """The Linux corpus from its bundle (a no-op when prepared), checked against the
    committed manifest's ``corpus_sha256``; ``experiments/runtime_h200``'s unpacking."""
    from nas.data.prepare import PrepareOptions, prepare
    from plan import load_module

    loop = load_module("runtime_h200_train_loop", ROOT / "experiments/runtime_h200/train_loop.py")
    if not (CORPUS / "src").is_dir():  # unpacked beside it, then moved: never half there
        log(f"unpacking {bundle}")
        tmp = CORPUS / ".unpacking"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        loop.unpack(bundle, tmp).rename(CORPUS / "src")
        tmp.rmdir()
    t0 = time.monotonic()
    prepare(PrepareOptions(source=str(CORPUS / "src"), out=CORPUS / "corpus", progress=False,
                           tokenizer=loop.TOKENIZER))
    got = json.loads((CORPUS / "corpus" / "manifest.json").read_text())["corpus_sha256"]
    if got != loop.committed_sha256():
        raise SystemExit(f"{CORPUS / 'corpus'}: corpus_sha256 {got} is not the committed "
                         f"{loop.committed_sha256()}")
    log(f"corpus ready in {time.monotonic() - t0:.0f} s: {CORPUS / 'corpus'}")


def prepare_smoke(work: Path) -> Setup:
    """A tiny subword corpus from tiny-shakespeare cut into documents, and the decode and
    prefill tables of `tiny_gqa` measured on this CPU (both skipped when there)."""
    from nas.data.prepare import PrepareOptions, prepare
    from nas.latency.build import build_table
    from nas.latency.measure import TimerSettings
    from nas.latency.spec import Workload
    from plan import space_of, target_of

    src = work / "smoke-src"
    if not src.is_dir():
        text = (ROOT / "nas" / "data" / "tinyshakespeare.txt").read_text()[:240_000]
        parts = text.split("\n\n")
        (src / "t").mkdir(parents=True)
        for i in range(40):
            (src / "t" / f"d{i:02d}.txt").write_text("\n\n".join(parts[i::40]) + "\n")
    s = smoke_setup(work)
    prepare(PrepareOptions(source=str(src), out=Path(s.data), vocab_size=SMOKE_VOCAB, progress=False))
    space = space_of(s)
    t = target_of(s).resolved(space.block_size)
    timer = TimerSettings(repeats=2, warmup=1, window_ms=0.5)
    for phase, B, seq in (("decode", t.batch_size, t.context), ("decode", 1, t.context),
                          ("prefill", t.batch_size, t.prompt_len)):
        w = Workload(device="cpu", batch_size=B, seq_len=seq, precisions=(s.precision,), phase=phase,
                     prompt_len=t.prompt_len if phase == "decode" else None)
        build_table(t.table_of(phase, space.block_size, B), space, w,
                    timer, calibration_n=4, progress=False, log=lambda _: None)
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state", type=Path, default=HERE / "state.jsonl",
                    help="finished jobs, one JSON line each (read, then appended to)")
    ap.add_argument("--work", type=Path, default=ROOT / "outputs" / "headline_h200",
                    help="checkpoints, studies and logs (not committed)")
    ap.add_argument("--out", type=Path, help="copy the state and the log here at the end")
    ap.add_argument("--bundle", type=Path, help="the Linux corpus bundle (prepared when needed)")
    ap.add_argument("--deadline-s", type=float, default=540.0,
                    help="stop launching, end running jobs and save by then")
    ap.add_argument("--jobs", type=int, default=4, help="worker processes at once")
    ap.add_argument("--jobs-while-supernet", type=int, default=2,
                    help="other workers beside the supernet's training")
    ap.add_argument("--min-left-s", type=float,
                    help="launch no training with less time than this left (default 300; 0 with --smoke)")
    ap.add_argument("--pack", type=int, default=0,
                    help="trainings run one after another in one worker, saving process starts "
                         "(0: 1, or 16 with --smoke)")
    ap.add_argument("--machine", default="", help="a label recorded with each result")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny_gqa, a few steps")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    (args.work / "jobs").mkdir(exist_ok=True)
    args.state.parent.mkdir(parents=True, exist_ok=True)
    log_path = args.work / "run.log"
    log_f = open(log_path, "a")

    def log(msg: str) -> None:
        line = f"[{time.monotonic() - t0:7.1f}s] {msg}"
        print(line, flush=True)
        log_f.write(line + "\n")
        log_f.flush()

    if args.bundle:
        prepare_linux(args.bundle, log)
    s = prepare_smoke(args.work) if args.smoke else Setup()
    results = load_state(args.state)
    log(f"{len(results)} finished jobs in {args.state}; deadline {args.deadline_s:.0f} s")
    running: dict[int, tuple[subprocess.Popen, list[tuple[str, dict[str, Any]]], float]] = {}
    stop = False

    def on_signal(*_: Any) -> None:
        nonlocal stop
        stop = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def record(jid: str, job: dict[str, Any], result: dict[str, Any]) -> None:
        results.setdefault(jid, result)
        with open(args.state, "a") as f:
            f.write(json.dumps({"id": jid, "job": job, "result": result, "machine": args.machine,
                                "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")

    def name(job: dict[str, Any]) -> str:
        return f"{job['kind']} {job.get('role', job.get('name', ''))}".strip()

    threads = max(1, (os.cpu_count() or 2) // max(1, args.jobs))
    pack = args.pack or (16 if args.smoke else 1)
    min_left = args.min_left_s if args.min_left_s is not None else (0.0 if args.smoke else 300.0)
    said_missing = False
    failed: list[tuple[str, str]] = []  # (job id, its worker's log)

    def start(batch: list[tuple[str, dict[str, Any]]]) -> None:
        for jid, job in list(batch):  # finished once already (its worker was ended before we read it)
            res_file = args.work / "jobs" / f"{jid}.json"
            if res_file.is_file():
                record(jid, job, json.loads(res_file.read_text()))
                batch.remove((jid, job))
        if batch:
            proc = _launch(batch, args.work, threads, args.smoke)
            running[proc.pid] = (proc, list(batch), time.monotonic())
            log(f"start {', '.join(f'{jid} ({name(j)})' for jid, j in batch)}")

    while not stop:
        for pid, (proc, batch, started) in list(running.items()):  # results as they land
            for jid, job in list(batch):
                res_file = args.work / "jobs" / f"{jid}.json"
                if res_file.is_file():
                    record(jid, job, json.loads(res_file.read_text()))
                    batch.remove((jid, job))
                    log(f"done {jid} ({name(job)}) after {time.monotonic() - started:.0f} s")
            if proc.poll() is not None:
                del running[pid]
                for jid, job in batch:
                    log(f"FAILED {jid} ({name(job)}), exit {proc.returncode}; see "
                        f"{args.work}/jobs/{proc.log_name}")
                    results.setdefault(jid, {"failed": True})  # not retried in this invocation
                    failed.append((jid, proc.log_name))
        plan = Plan(s, results)
        if plan.missing_table and not said_missing:
            log(f"waiting for the target's tables (searches, references): {plan.missing_table}")
            said_missing = True
        left = args.deadline_s - (time.monotonic() - t0)
        busy = {jid for _, b, _ in running.values() for jid, _ in b}
        todo, seen = [], set(busy)
        for p, j, n in sorted(plan.jobs(), key=lambda x: x[0]):  # one of a job wanted in two roles
            if job_id(j) not in results and job_id(j) not in seen:
                seen.add(job_id(j))
                todo.append((p, j, n))
        if not todo and not running:
            log("nothing left to do" + (" until the target's tables exist" if plan.missing_table else "")
                + (f" in this call: {len(failed)} job(s) FAILED; run again to retry them" if failed else ""))
            break
        if left <= 0:
            log(f"deadline: ending {len(running)} running worker(s)")
            break
        kinds = [j["kind"] for _, b, _ in running.values() for _, j in b]
        sup_running = "supernet" in kinds
        waiting: list[tuple[str, dict[str, Any]]] = []
        for _, job, needs in todo:
            if "latency" in kinds:
                break
            if job["kind"] == "latency":  # alone on the GPU, whenever it is idle (a call's start or end)
                if not running:
                    start([(job_id(j), j) for _, j, _ in todo if j["kind"] == "latency"])
                    break
                continue
            limit = args.jobs if not sup_running or job["kind"] == "supernet" else \
                args.jobs_while_supernet + 1
            if len(running) >= limit or (job["kind"] == "alone" and left < min_left):
                continue
            if needs and not _ckpt_ready(plan, args.work, sup_running):
                if plan.done(plan.supernet_job()) is not None and not sup_running:
                    # a checkpoint lost with its machine: trained again (same recipe and seed)
                    again = {**plan.supernet_job(), "retrain": True}
                    start([(job_id(again), again)])
                    sup_running = True
                continue
            if job["kind"] == "alone" and pack > 1:
                waiting.append((job_id(job), job))
                if len(waiting) == pack:
                    start(waiting)
                    waiting = []
                continue
            start([(job_id(job), job)])
            sup_running = sup_running or job["kind"] == "supernet"
        if waiting and len(running) < args.jobs:
            start(waiting)
        if not running:  # nothing could start: every job left waits for more time than is left
            log(f"{len(todo)} job(s) left, none of which fits the {left:.0f} s left")
            break
        time.sleep(0.3 if args.smoke else 2.0)

    for proc, batch, _ in running.values():
        log(f"ending unfinished {', '.join(jid for jid, _ in batch)}")
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc, _, _ in running.values():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    all_jobs = Plan(s, results).jobs()
    n_done = sum(job_id(j) in results and not results[job_id(j)].get("failed") for _, j, _ in all_jobs)
    log(f"{n_done} of {len(all_jobs)} known jobs finished (more appear as searches finish)")
    log_f.close()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        if args.state.is_file():
            shutil.copy(args.state, args.out / "state.jsonl")
        shutil.copy(log_path, args.out / "run.log")
        if failed:  # the end of each failed worker's log, to read without the machine
            with open(args.out / "failed_jobs.log", "w") as f:
                for jid, name_ in failed:
                    text = (args.work / "jobs" / name_).read_text(errors="replace")
                    f.write(f"==== {jid} ({name_})\n{text[-6000:]}\n")
    return 0


def _ckpt_ready(plan: Plan, work: Path, training: bool) -> bool:
    """Whether the finished supernet's checkpoint is on this machine."""
    return (not training and plan.done(plan.supernet_job()) is not None
            and (work / "supernets" / SUPERNET / "supernet.pt").is_file())


def _launch(batch: list[tuple[str, dict[str, Any]]], work: Path, threads: int,
            smoke: bool) -> subprocess.Popen:
    """A worker running ``batch`` one job after another (``jobs.py``), in its own session."""
    jdir = work / "jobs"
    argv = [sys.executable, str(HERE / "jobs.py"), str(work)]
    for jid, job in batch:
        (jdir / f"{jid}.job.json").write_text(json.dumps(job))
        argv += [str(jdir / f"{jid}.job.json"), str(jdir / f"{jid}.json")]
    env = {**os.environ, "JOB_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if smoke:  # the CPU, and a proof that no job needs Hydra (nor Optuna, but the searches)
        env.update(CUDA_VISIBLE_DEVICES="", HEADLINE_BLOCK="1")
    log_name = f"{batch[0][0]}.log"
    with open(jdir / log_name, "w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    proc.log_name = log_name  # type: ignore[attr-defined]
    return proc


if __name__ == "__main__":
    sys.exit(main())
