"""Two GPUs against one: data-parallel supernet training, and two search workers.

In one call, on a host with two GPUs, through the commands a user runs:

(a) the supernet of ``--space`` with ``--recipe`` shortened to ``--steps`` steps, on one
    GPU (``python -m nas.train``) and on two (``torchrun --nproc_per_node=2 -m
    nas.train``), same global batch, steps and seed: tokens/s over every logged interval
    (median and spread) and the final validation losses;
(b) scoring: ``python -m nas.search`` on the two-GPU supernet, one worker on GPU 0 against
    two workers on GPUs 0 and 1 sharing one study in a journal file, ``--trials``
    trials in all: trials/s and the hypervolume of each study;
(c) while time is left: the step of one rank alone (one GPU at half the batch), and both
    set-ups at ``--big-batch``, to show where the two-GPU speed-up is lost.

Writes into ``--out``: results.json (every figure, the commands, the environment),
intervals.csv (tokens/s of each logged interval of each run), trials.csv (every trial of
both studies), log.txt (every command's output); checkpoints and studies into ``--scratch``.
``--smoke`` runs it all on the CPU with gloo and the ``tiny`` space in a few minutes.

    python experiments/ddp_h200/run.py --out $OUT
    python experiments/ddp_h200/run.py --out /tmp/ddp-smoke --smoke
"""
from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from a plain checkout (no pip install)

import pandas as pd  # noqa: E402

from nas.environment import environment  # noqa: E402

T0 = time.monotonic()


class Log:
    """Every command's output, in one file, and a short line of each on the console."""

    def __init__(self, path: Path):
        self.path = path
        path.write_text("")

    def run(self, name: str, cmds: list[list[str]], envs: list[dict[str, str]],
            timeout: float) -> float:
        """Run ``cmds`` together (one per GPU), wait for all; their wall time in seconds."""
        print(f"[{time.monotonic() - T0:6.0f} s] {name}: {' '.join(cmds[0])}", flush=True)
        t = time.perf_counter()
        procs = [subprocess.Popen(c, cwd=ROOT, env=e, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for c, e in zip(cmds, envs)]
        outs = []
        for p in procs:
            try:
                outs.append(p.communicate(timeout=max(1.0, timeout - (time.perf_counter() - t)))[0])
            except subprocess.TimeoutExpired:
                p.kill()
                outs.append(p.communicate()[0] + "\n[killed: out of time]")
        wall = time.perf_counter() - t
        with open(self.path, "a") as f:
            for c, o, p in zip(cmds, outs, procs):
                f.write(f"==== {name} (exit {p.returncode}, {wall:.1f} s): {' '.join(c)}\n{o}\n")
        bad = [p.returncode for p in procs if p.returncode]
        if bad:
            raise RuntimeError(f"{name} failed (exit {bad}); see {self.path}")
        return wall


def intervals(log_csv: Path, tokens_per_step: int, run: str) -> pd.DataFrame:
    """Tokens/s of each logged interval, from the log's running mean (evaluation excluded)."""
    log = pd.read_csv(log_csv)
    steps = log["step"].to_numpy()
    seconds = (steps * tokens_per_step) / log["tokens_per_s"].to_numpy()  # training time so far
    rows = []
    for i in range(len(log)):
        s0, t0 = (steps[i - 1], seconds[i - 1]) if i else (0, 0.0)
        rows.append({"run": run, "step": int(steps[i]), "steps": int(steps[i] - s0),
                     "seconds": seconds[i] - t0,
                     "tokens_per_s": (steps[i] - s0) * tokens_per_step / (seconds[i] - t0)})
    return pd.DataFrame(rows)


def spread(x: pd.Series) -> dict:
    q = x.quantile([0.0, 0.25, 0.5, 0.75, 1.0]).to_numpy()
    return {"median": q[2], "q25": q[1], "q75": q[3], "min": q[0], "max": q[4], "n": int(len(x))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64, help="global batch (the recipe's)")
    ap.add_argument("--trials", type=int, default=300, help="search trials in all, per set-up")
    ap.add_argument("--big-batch", type=int, default=256)
    ap.add_argument("--short-steps", type=int, default=300, help="steps of the set-ups of (c)")
    ap.add_argument("--deadline-s", type=float, default=470, help="(c) only while time is left")
    ap.add_argument("--revision", default=None, help="the git revision (no clone on the GPU host)")
    ap.add_argument("--workers-exact", action="store_true",
                    help="the search has search.device=cuda:K and an exact n_trials total over "
                         "workers: each worker gets n_trials=--trials on its own GPU")
    ap.add_argument("--scratch", type=Path, default=None,
                    help="checkpoints, studies, Hydra folders (default: OUT/scratch)")
    ap.add_argument("--only-training", action="store_true", help="(a) alone: no search, no (c)")
    ap.add_argument("--smoke", action="store_true", help="CPU, gloo, tiny space, a few steps")
    args = ap.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    scratch = args.scratch or out / "scratch"  # checkpoints and studies: kept on the host
    gpu = not args.smoke
    space, recipe = ("shakespeare", "shakespeare_supernet") if gpu else ("tiny", "tiny")
    hardware, budget = ("h100", 1.0) if gpu else ("cpu", 1.0)
    if args.smoke:
        args.steps, args.trials, args.short_steps, args.big_batch = 40, 12, 20, 32
        args.batch = 16
        os.environ["OMP_NUM_THREADS"] = "1"  # a shared CPU: threads would only fight
    block = 256 if gpu else 64
    sandwich = 4  # largest, smallest, n_random=2 (both recipes)
    log = Log(out / "log.txt")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
           "NVSHMEM_DISABLE_NVLS": "1", "PYTHONUNBUFFERED": "1"}
    py = sys.executable
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    results: dict = {"space": space, "recipe": recipe, "steps": args.steps, "global_batch": args.batch,
                     "revision": args.revision, "host": socket.gethostname(), "runs": {}}
    all_intervals = []

    def save() -> None:
        results["environment"] = environment("cuda" if gpu else "cpu")
        if gpu:
            try:
                results["environment"]["nvidia_smi_topo"] = subprocess.run(
                    ["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=20).stdout
            except (OSError, subprocess.SubprocessError):
                pass
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
        if all_intervals:
            pd.concat(all_intervals).to_csv(out / "intervals.csv", index=False)

    def train(name: str, n_gpus: int, batch: int, steps: int, eval_every: int) -> dict:
        d = scratch / name
        over = [f"search_space={space}", f"train={recipe}", f"train.steps={steps}",
                f"train.batch_size={batch}", f"train.eval_every={eval_every}", f"out_dir={d}",
                f"hydra.run.dir={scratch / 'hydra' / name}"]
        if not gpu:
            over.append("train.device=cpu")
        cmd = (torchrun if n_gpus == 2 else [py]) + ["-m", "nas.supernet", *over]
        e = dict(env) if n_gpus == 2 else {**env, "CUDA_VISIBLE_DEVICES": "0"}
        wall = log.run(name, [cmd], [e], timeout=180)
        iv = intervals(d / "log.csv", batch * block * sandwich, name)
        all_intervals.append(iv)
        last = pd.read_csv(d / "log.csv").iloc[-1]
        r = {"command": " ".join(cmd), "gpus": n_gpus, "global_batch": batch, "steps": steps,
             "wall_s": wall, "tokens_per_s": spread(iv["tokens_per_s"]),
             "tokens_per_s_after_first_interval": spread(iv["tokens_per_s"].iloc[1:]),
             "final_val": {k[4:]: float(last[k]) for k in last.index
                           if k.startswith("val_") and not math.isnan(last[k])},
             "checkpoint": str(d / "supernet.pt")}
        results["runs"][name] = r
        save()
        print(f"    {name}: median {r['tokens_per_s']['median']:,.0f} tokens/s, final val "
              f"{r['final_val']}", flush=True)
        return r

    # (a) the supernet on one GPU and on two: same global batch, steps, seed.
    eval_every = max(1, args.steps // 3)
    one = train("train-1gpu", 1, args.batch, args.steps, eval_every)
    two = train("train-2gpu", 2, args.batch, args.steps, eval_every)
    results["training"] = {
        "speedup_median_tokens_per_s": two["tokens_per_s"]["median"] / one["tokens_per_s"]["median"],
        "final_val_difference_2gpu_minus_1gpu": {
            k: two["final_val"][k] - one["final_val"][k] for k in one["final_val"]}}
    save()

    if args.only_training:
        print(json.dumps(results["training"], indent=1))
        return
    # (b) scoring: one worker against two, on the two-GPU supernet.
    results["search"] = search(args, log, env, scratch, out, two["checkpoint"], space, hardware,
                               budget, gpu)
    save()

    # (c) where the speed-up goes: one rank's share alone, and a larger batch.
    extra = [("train-1gpu-half-batch", 1, args.batch // 2), ("train-1gpu-big-batch", 1, args.big_batch),
             ("train-2gpu-big-batch", 2, args.big_batch)]
    for name, n, batch in extra:
        if time.monotonic() - T0 > args.deadline_s:
            results.setdefault("skipped_for_time", []).append(name)
            continue
        train(name, n, batch, args.short_steps, args.short_steps)
    save()
    print(json.dumps({"training": results["training"],
                      "search": {k: v for k, v in results["search"].items() if k != "commands"},
                      "extra": {n: results["runs"][n]["tokens_per_s"]["median"]
                                for n, _, _ in extra if n in results["runs"]}}, indent=1, default=str))


def search(args, log: Log, env: dict, scratch: Path, out: Path, checkpoint: str, space: str,
           hardware: str, budget: float, gpu: bool) -> dict:
    """One worker against two on one study each; trials/s and hypervolume of both."""
    import optuna

    from nas.search.results import hypervolume, pareto_frame, trials_frame
    from nas.search.storage import open_storage
    from nas.search.study import open_study

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    py = sys.executable
    setups = {"search-1worker": 1, "search-2workers": 2}
    res: dict = {"trials_in_all": args.trials, "latency_budget_ms": budget, "commands": {}}
    frames = {}
    for name, n in setups.items():
        journal = str(scratch / f"{name}.journal")
        if not args.workers_exact:
            # The study exists before the workers start: two workers creating it at the
            # same moment can crash on a search without the multi-worker fixes.
            open_study(open_storage(journal), name, optuna.samplers.RandomSampler(), {}, journal)
        cmds, envs = [], []
        for k in range(n):
            each = args.trials if (args.workers_exact or n == 1) else args.trials // n
            over = [f"search_space={space}", f"hardware={hardware}", f"supernet.checkpoint={checkpoint}",
                    f"search.n_trials={each}", f"search.storage={journal}", f"search.study_name={name}",
                    f"search.latency_budget_ms={budget}", "search.progress=false",
                    f"hydra.run.dir={scratch / 'hydra' / f'{name}-{k}'}"]
            e = dict(env)
            if not gpu:
                over.append("search.device=cpu")
            elif args.workers_exact:
                over.append(f"search.device=cuda:{k}")
            else:
                over.append("search.device=cuda")
                e["CUDA_VISIBLE_DEVICES"] = str(k)
            if not args.workers_exact:
                over.append(f"search.seed={k}")  # one seed per worker: distinct first generations
            cmds.append([py, "-m", "nas.search", *over])
            envs.append(e)
        wall = log.run(name, cmds, envs, timeout=150)
        study = optuna.load_study(study_name=name, storage=open_storage(journal, create=False))
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
        df = trials_frame(study)
        df.insert(0, "study", name)
        frames[name] = df
        res[name] = {"workers": n, "wall_s": wall, "complete": len(done), "span_s": span,
                     "trials_per_s": len(done) / span, "trials_per_s_wall": len(done) / wall,
                     "distinct_archs": int(df["arch_id"].nunique()),
                     "within_budget": int(df["feasible"].sum())}
        res["commands"][name] = [" ".join(c) for c in cmds]
    # One reference point for both: the worst scored loss within the budget, and the budget.
    both = pd.concat(frames.values())
    ok = both[both["feasible"] & both["scored"]]
    ref = (float(ok["val_loss"].max()), budget)
    res["hypervolume_reference"] = ref
    for name, df in frames.items():
        front = pareto_frame(df)
        res[name]["hypervolume"] = hypervolume(front[["val_loss", "latency_ms"]].to_numpy(), ref)
        res[name]["best_loss_within_budget"] = float(front["val_loss"].min())
        res[name]["front_size"] = int(len(front))
    one, two = res["search-1worker"], res["search-2workers"]
    res["speedup_trials_per_s"] = two["trials_per_s"] / one["trials_per_s"]
    res["speedup_trials_per_s_wall"] = two["trials_per_s_wall"] / one["trials_per_s_wall"]
    both.to_csv(out / "trials.csv", index=False)
    return res


if __name__ == "__main__":
    main()
