"""The headline experiment and the `shakespeare` ranking study, as one resumable GPU run.

From the repository root, on a machine with one GPU (and Optuna and Hydra installed)::

    python experiments/headline_h100/run.py --deadline-s 540 --out DIR

does, as far as the deadline allows, and continues where it stopped when run again
with the same ``--state`` (the finished jobs are recorded there, one JSON line each):

1. **Recipes.** Trains the `shakespeare` supernet with each distillation weight of
   ``ALPHAS`` (``conf/train/shakespeare.yaml`` otherwise) and scores the largest, the
   nanoGPT baseline and the smallest sub-network on the test split. The recipe used
   next is chosen by a rule fixed in advance: the lowest mean of those three test losses.
2. **Search.** ``python -m nas.search`` on ``hardware=h100-graph`` with bf16 and fp16
   allowed, twice on that supernet: the headline search, with a budget of half the
   baseline's predicted bf16 latency, and a search at the target's default budget whose
   front gives half of the ranking study's architectures.
3. **Training alone** (every run early-stopped on validation; its test loss reported):
   the headline search's best ``N_CANDIDATES`` from scratch and fine-tuned from the
   supernet's slices; the nanoGPT baseline and the uniform shrinks of it; the ranking
   study's architectures (half from the default-budget front, half stratified by size
   over the space). Every one with ``SEEDS``.
4. **Latency.** Every headline model's forward pass timed as a CUDA graph (batch 1, 256
   tokens) in its precision and in the baseline's other precisions, alone on the GPU.

Many trainings share the GPU at once (``--jobs`` worker processes). ``--smoke`` runs
the same code on the CPU with the `tiny` space, a few steps per training and a short
search: a check of the script, not a measurement. ``report.py`` turns the state into
the tables and plots.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from nas.space import ArchConfig, SearchSpace, load_space, sample  # noqa: E402

SEEDS = (0, 1)                 # standalone seeds: the recipe's seed + this
ALPHAS = (0.0, 0.5)            # distillation weights compared in step 1
N_CANDIDATES = 3
N_REGION, N_STRATIFIED = 10, 10
HEADLINE_FRACTION = 0.5        # headline budget: this fraction of the baseline's latency
# Other supernet recipes, scored on the ranking study's architectures only (the ground
# truth does not depend on the supernet): name -> overrides of the recipe.
VARIANTS = {"alpha0-steps6000": {"distill_alpha": 0.0, "steps": 6000}}


@dataclass(frozen=True)
class Setup:
    """What differs between the GPU run and the CPU smoke run."""

    space: str = "shakespeare"
    recipe: str = "shakespeare"
    finetune_recipe: str = "shakespeare_finetune"
    hardware: str = "h100-graph"
    table: str = "latency_tables/h100-shakespeare-graph.csv"
    device: str = "cuda"
    precisions: tuple[str, ...] = ("bf16", "fp16")
    region_budget_ms: float = 0.5  # conf/hardware/h100-graph.yaml's default
    n_trials: int = 300
    train: dict = field(default_factory=dict)      # overrides of every training recipe
    supernet_train: dict = field(default_factory=dict)
    n_region: int = N_REGION
    n_stratified: int = N_STRATIFIED
    n_candidates: int = N_CANDIDATES


SMOKE = Setup(space="tiny", recipe="tiny", finetune_recipe="tiny", hardware="cpu",
              table="latency_tables/cpu-tiny.csv", device="cpu", precisions=("fp32", "bf16"),
              region_budget_ms=1.0, n_trials=16,
              train={"steps": 12, "eval_every": 4, "batch_size": 4, "device": "cpu", "patience": 2},
              supernet_train={"steps": 16, "eval_every": 8, "batch_size": 4, "device": "cpu"},
              n_region=3, n_stratified=3, n_candidates=2)


def job_id(job: dict[str, Any]) -> str:
    """A job's key: a hash of what it does (a training's role does not change it, so an
    architecture wanted in two roles is trained once)."""
    blob = json.dumps({k: v for k, v in job.items() if k != "role"}, sort_keys=True)
    return f"{job['kind']}-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"


def uniform_shrinks(space: SearchSpace, table: Any, precision: str, budget_ms: float) -> list[ArchConfig]:
    """The uniform shrinks of the baseline a user would try without a search.

    Every layer alike, fewer layers or narrower: for each depth below the baseline's,
    the widest (the baseline's width, heads and FFN), and the widest uniform shrink
    that meets ``budget_ms`` (most parameters among those within it).
    """
    b = space.baseline_arch()
    out = [space.make(L, b.d_model, [b.n_head[0]] * L, [b.d_ff[0]] * L, precision)
           for L in range(space.n_layer_min, b.n_layer)]
    within = []
    for L in range(space.n_layer_min, b.n_layer + 1):
        for d in (x for x in space.d_model if x <= b.d_model):
            for h in (x for x in space.n_head if x <= b.n_head[0] and x * space.head_dim <= d):
                for f in (x for x in space.d_ff if x <= b.d_ff[0]):
                    a = space.make(L, d, [h] * L, [f] * L, precision)
                    if table.predict_ms(a) <= budget_ms:
                        within.append(a)
    if within:
        best = max(within, key=lambda a: (param_count(a), -table.predict_ms(a)))
        if best.arch_id not in {a.arch_id for a in out}:
            out.append(best)
    return out


def param_count(arch: ArchConfig) -> int:
    """Parameters of the standalone model of ``arch`` (tied head counted once)."""
    return arch.n_params


def stratified(space: SearchSpace, n: int, seed: int, precisions: tuple[str, ...],
               pool: int = 500) -> list[ArchConfig]:
    """One random member of each of ``n`` equal-count strata of a seeded pool sorted by
    parameter count (the precision drawn from ``precisions``): spread over the space,
    none hand-picked."""
    rng = random.Random(seed)
    dev = "cuda" if set(precisions) <= set(space.precision.get("cuda", ())) else "cpu"
    cands = {}
    for _ in range(pool):
        a = sample(space, rng, device=dev)
        if a.precision in precisions:
            cands[a.arch_id] = a
    ordered = sorted(cands.values(), key=lambda a: (param_count(a), a.arch_id))
    return [rng.choice(ordered[i * len(ordered) // n:(i + 1) * len(ordered) // n])
            for i in range(n)]


def front_region(trials: list[dict[str, Any]], n: int) -> list[ArchConfig]:
    """``n`` distinct architectures from the search's returned region: the first
    non-dominated fronts of the scored feasible trials (the Pareto front, then the front
    of what is left, ...), evenly spread over latency within the last front needed."""
    pts = {}
    for t in trials:
        if t["feasible"] and t["val_loss"] is not None:
            a = ArchConfig.from_dict(t["arch"])
            pts.setdefault(a.arch_id, (t["val_loss"], t["latency_ms"], a))
    left, picked = list(pts.values()), []
    while left and len(picked) < n:
        front = [p for p in left if not any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in left)]
        front.sort(key=lambda p: p[1])
        need = n - len(picked)
        if len(front) <= need:
            picked += front
        else:
            picked += [front[round(i * (len(front) - 1) / max(1, need - 1))] for i in range(need)]
        left = [p for p in left if p not in front]
    return [p[2] for p in picked]


_STEPS: dict[tuple[str, int], int] = {}


@functools.lru_cache(maxsize=None)
def _space_and_table(space: str, table: str) -> tuple[SearchSpace, Any]:
    """Read once: the plan is rebuilt every few seconds while jobs run."""
    from nas.latency import LatencyTable
    return load_space(space), LatencyTable.load(ROOT / table)


class Plan:
    """Which jobs exist and which can run, given the results so far."""

    def __init__(self, s: Setup, results: dict[str, dict[str, Any]], work: Path,
                 latency_tags: tuple[str, ...] = ()):
        self.s, self.results, self.work, self.latency_tags = s, results, work, latency_tags
        self.space, self.table = _space_and_table(s.space, s.table)
        b = self.space.baseline_arch()
        self.baseline_ms = {p: self.table.predict_ms(dataclasses.replace(b, precision=p))
                            for p in s.precisions}
        self.headline_budget = round(HEADLINE_FRACTION * min(self.baseline_ms.values()), 4)

    # -- jobs ----------------------------------------------------------------------------
    def supernet_job(self, alpha: float) -> dict[str, Any]:
        return {"kind": "supernet", "name": f"alpha{alpha:g}", "space": self.s.space,
                "recipe": self.s.recipe, "train": {**self.s.supernet_train, "distill_alpha": alpha}}

    def variant_job(self, name: str) -> dict[str, Any]:
        train = {**self.s.supernet_train, **VARIANTS[name]}
        if self.s is SMOKE:
            train["steps"] = self.s.supernet_train["steps"]
        return {"kind": "supernet", "name": name, "space": self.s.space, "recipe": self.s.recipe,
                "train": train}

    def score_job(self, supernet: str, archs: list[ArchConfig]) -> dict[str, Any]:
        return {"kind": "score", "supernet": supernet, "space": self.s.space,
                "archs": [a.to_dict() for a in archs]}

    def done(self, job: dict[str, Any]) -> dict[str, Any] | None:
        r = self.results.get(job_id(job))
        return None if r is None or r.get("failed") else r

    def ckpt_ready(self, job: dict[str, Any]) -> bool:
        """Whether the supernet's finished checkpoint is on this machine."""
        from nas.supernet.checkpoint import read_checkpoint
        from nas.errors import ConfigError
        p = self.work / "supernets" / job["name"] / "supernet.pt"
        if not p.is_file() or self.done(job) is None:
            return False
        key = (str(p), p.stat().st_mtime_ns)
        if key not in _STEPS:  # a checkpoint is large: read each version once
            try:
                _STEPS[key] = int(read_checkpoint(p)["step"])
            except ConfigError:
                _STEPS[key] = -1
        return _STEPS[key] >= self.done(job)["step"]

    def chosen_alpha(self) -> float | None:
        """The recipe rule: lowest mean test loss of largest, baseline and smallest."""
        res = [(self.done(self.supernet_job(a)), a) for a in ALPHAS]
        if any(r is None for r, _ in res):
            return None
        keys = ("largest_test", "baseline_test", "smallest_test")
        return min(res, key=lambda ra: (sum(ra[0][k] for k in keys if k in ra[0]), ra[1]))[1]

    def search_job(self, name: str, alpha: float, budget: float) -> dict[str, Any]:
        return {"kind": "search", "name": name, "supernet": f"alpha{alpha:g}", "space": self.s.space,
                "hardware": self.s.hardware, "budget_ms": budget, "n_trials": self.s.n_trials,
                "precisions": list(self.s.precisions), "precision_device": self.s.device,
                "device": "auto", "seed": 0}

    def alone_job(self, arch: ArchConfig, seed: int, role: str, init: str = "scratch",
                  alpha: float | None = None) -> dict[str, Any]:
        job = {"kind": "alone", "arch": arch.to_dict(), "seed": 1337 + seed, "init": init,
               "recipe": self.s.finetune_recipe if init == "supernet" else self.s.recipe,
               "train": dict(self.s.train), "role": role}
        if init == "supernet":
            job["supernet"] = f"alpha{alpha:g}"
        return job

    def candidates(self, search: dict[str, Any]) -> list[ArchConfig]:
        ok = sorted((t for t in search["trials"] if t["feasible"] and t["val_loss"] is not None),
                    key=lambda t: (t["val_loss"], t["latency_ms"]))
        out: dict[str, ArchConfig] = {}
        for t in ok:
            a = ArchConfig.from_dict(t["arch"])
            out.setdefault(a.arch_id, a)
            if len(out) == self.s.n_candidates:
                break
        return list(out.values())

    def headline_precision(self, cands: list[ArchConfig]) -> list[str]:
        return sorted({a.precision for a in cands})

    def references(self, precision: str) -> list[tuple[str, ArchConfig]]:
        b = self.space.baseline_arch()
        out = [("baseline", dataclasses.replace(b, precision=precision))]
        out += [("uniform", a) for a in uniform_shrinks(self.space, self.table, precision,
                                                        self.headline_budget)]
        return out

    def ranking_archs(self) -> tuple[list[ArchConfig], bool]:
        """The ranking study's architectures, and whether the list is complete yet."""
        strat = stratified(self.space, self.s.n_stratified, 0, self.s.precisions)
        alpha = self.chosen_alpha()
        region = None if alpha is None else self.done(
            self.search_job("region", alpha, self.s.region_budget_ms))
        if region is None:
            return strat, False
        seen = {a.arch_id for a in strat}
        picks = [a for a in front_region(region["trials"], self.s.n_region + len(strat))
                 if a.arch_id not in seen][: self.s.n_region]
        return picks + strat, True

    def jobs(self) -> list[tuple[int, dict[str, Any], list[str]]]:
        """(priority, job, names of the supernets whose checkpoint it needs), every job
        whose inputs are known, done or not; lower priority numbers go first."""
        out: list[tuple[int, dict[str, Any], list[str]]] = []
        for a in ALPHAS:
            out.append((0, self.supernet_job(a), []))
        alpha = self.chosen_alpha()
        head = region = None
        if alpha is not None:
            sn = f"alpha{alpha:g}"
            hj = self.search_job("headline", alpha, self.headline_budget)
            rj = self.search_job("region", alpha, self.s.region_budget_ms)
            out += [(1, hj, [sn]), (1, rj, [sn])]
            head, region = self.done(hj), self.done(rj)
        ranking, complete = self.ranking_archs()
        if head is not None:
            cands = self.candidates(head)
            for a in cands:
                for sd in SEEDS:
                    out.append((3, self.alone_job(a, sd, "searched", "supernet", alpha), [f"alpha{alpha:g}"]))
                    out.append((4, self.alone_job(a, sd, "searched"), []))
            refs = [r for p in self.headline_precision(cands) for r in self.references(p)]
            for role, a in refs:
                for sd in SEEDS:
                    out.append((5, self.alone_job(a, sd, role), []))
            lat = cands + [a for _, a in refs]
            # the precision gain, reported apart: the baseline in every precision
            b = self.space.baseline_arch()
            lat += [dataclasses.replace(b, precision=p)
                    for p in self.space.precision.get(self.s.device, ())]
            uniq = list({a.arch_id: a for a in lat}.values())
            lj = {"kind": "latency", "archs": [a.to_dict() for a in uniq], "passes": 3, "repeats": 20}
            out.append((-1, lj, []))
            for tag in self.latency_tags:  # the same measurement again, on another machine
                out.append((-1, {**lj, "tag": tag}, []))
        for a in ranking:
            for sd in SEEDS:
                out.append((6, self.alone_job(a, sd, "ranking"), []))
        if complete and region is not None:
            for al in ALPHAS:
                extra = self.candidates(head) if head is not None else []
                archs = list({a.arch_id: a for a in ranking + extra}.values())
                out.append((2, self.score_job(f"alpha{al:g}", archs), [f"alpha{al:g}"]))
            for name in VARIANTS:
                out.append((7, self.variant_job(name), []))
                out.append((2, self.score_job(name, ranking), [name]))
        return out


def load_state(path: Path) -> dict[str, dict[str, Any]]:
    res: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                res.setdefault(job_id(r["job"]), r["result"])  # the first record of a job counts
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state", type=Path, default=HERE / "state.jsonl",
                    help="finished jobs, one JSON line each (read, then appended to)")
    ap.add_argument("--work", type=Path, default=ROOT / "outputs" / "headline",
                    help="checkpoints, the study and logs (not committed)")
    ap.add_argument("--out", type=Path, help="copy the state and logs here at the end")
    ap.add_argument("--deadline-s", type=float, default=540.0,
                    help="stop launching, end running jobs and save by then")
    ap.add_argument("--jobs", type=int, default=12, help="worker processes at once")
    ap.add_argument("--jobs-while-supernet", type=int, default=3,
                    help="other workers beside supernet trainings")
    ap.add_argument("--min-left-s", type=float, default=150.0,
                    help="launch no training with less time than this left")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny space, a few steps")
    ap.add_argument("--machine", default="", help="a label recorded with each result")
    ap.add_argument("--latency-again", action="append", default=[], metavar="TAG",
                    help="measure the headline latencies again (on another machine), labelled TAG")
    args = ap.parse_args(argv)

    t0 = time.monotonic()
    s = SMOKE if args.smoke else Setup()
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

    results = load_state(args.state)
    log(f"{len(results)} finished jobs in {args.state}; deadline {args.deadline_s:.0f} s")
    running: dict[str, tuple[subprocess.Popen, dict[str, Any], float]] = {}
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

    threads = max(1, (os.cpu_count() or 2) // max(1, args.jobs))
    while not stop:
        # collect finished workers
        for jid, (proc, job, started) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[jid]
            res_file = args.work / "jobs" / f"{jid}.json"
            if proc.returncode == 0 and res_file.is_file():
                res = json.loads(res_file.read_text())
                record(jid, job, res)
                log(f"done {jid} ({job['kind']} {job.get('role', job.get('name', job.get('supernet', '')))}) in "
                    f"{time.monotonic() - started:.0f} s")
            else:
                log(f"FAILED {jid} ({job['kind']}), exit {proc.returncode}; see {args.work}/jobs/{jid}.log")
                results.setdefault(jid, {"failed": True})  # not retried in this invocation
        plan = Plan(s, results, args.work, tuple(args.latency_again))
        left = args.deadline_s - (time.monotonic() - t0)
        todo = sorted(((pri, job, needs) for pri, job, needs in plan.jobs()
                       if job_id(job) not in results and job_id(job) not in running),
                      key=lambda x: x[0])
        if not todo and not running:
            log("nothing left to do")
            break
        if left <= 0:
            log(f"deadline: ending {len(running)} running job(s)")
            break
        supernets_running = any(j["kind"] == "supernet" for _, j, _ in running.values())
        exclusive_running = any(j["kind"] == "latency" for _, j, _ in running.values())
        for pri, job, needs in todo:
            if exclusive_running:
                break
            if job["kind"] == "latency":
                if running:
                    continue  # runs alone on the GPU; taken as soon as it is idle
            limit = args.jobs if not supernets_running or job["kind"] == "supernet" else \
                args.jobs_while_supernet + sum(j["kind"] == "supernet" for _, j, _ in running.values())
            if len(running) >= limit:
                continue
            if job["kind"] in ("alone",) and left < args.min_left_s:
                continue
            missing = []
            for name in needs:
                sj = plan.variant_job(name) if name in VARIANTS else \
                    plan.supernet_job(float(name[len("alpha"):]))
                if not plan.ckpt_ready(sj):
                    missing.append(sj)
            if missing:
                for sj in missing:  # a checkpoint lost with a machine: train it again
                    rid = job_id({**sj, "retrain": True})
                    if plan.done(sj) is not None and rid not in running and len(running) < args.jobs:
                        running[rid] = _launch({**sj, "retrain": True}, rid, args.work, threads, args.smoke)
                        log(f"start {rid} (supernet {sj['name']} again: its checkpoint is gone)")
                continue
            jid = job_id(job)
            running[jid] = _launch(job, jid, args.work, threads, args.smoke)
            log(f"start {jid} ({job['kind']} {job.get('role', job.get('name', job.get('supernet', '')))})")
            supernets_running = supernets_running or job["kind"] == "supernet"
            if job["kind"] == "latency":
                exclusive_running = True
        time.sleep(0.5 if args.smoke else 2.0)

    for jid, (proc, job, _) in running.items():
        log(f"ending unfinished {jid} ({job['kind']})")
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc, _, _ in running.values():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    plan = Plan(s, results, args.work, tuple(args.latency_again))
    all_jobs = plan.jobs()
    n_done = sum(job_id(j) in results and not results[job_id(j)].get("failed") for _, j, _ in all_jobs)
    log(f"{n_done} of {len(all_jobs)} known jobs finished (more appear as searches finish)")
    log_f.close()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        if args.state.is_file():
            shutil.copy(args.state, args.out / "state.jsonl")
        shutil.copy(log_path, args.out / "run.log")
        for name in ("headline", "region"):
            d = args.work / f"search-{name}"
            if (d / "pareto.png").is_file():
                shutil.copy(d / "pareto.png", args.out / f"search-{name}-pareto.png")
            if (args.work / f"search-{name}.log").is_file():
                shutil.copy(args.work / f"search-{name}.log", args.out / f"search-{name}.log")
    return 0


def _launch(job: dict[str, Any], jid: str, work: Path, threads: int,
            smoke: bool) -> tuple[subprocess.Popen, dict[str, Any], float]:
    jdir = work / "jobs"
    (jdir / f"{jid}.job.json").write_text(json.dumps(job))
    env = {**os.environ, "JOB_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if smoke:
        env["CUDA_VISIBLE_DEVICES"] = ""
    log = open(jdir / f"{jid}.log", "w")
    proc = subprocess.Popen([sys.executable, str(HERE / "jobs.py"), str(jdir / f"{jid}.job.json"),
                             str(work), str(jdir / f"{jid}.json")],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, job, time.monotonic()


if __name__ == "__main__":
    sys.exit(main())
