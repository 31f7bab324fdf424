"""What the H200 headline runs: its setup, the reference architectures and the jobs.

A :class:`Plan` is rebuilt from the finished jobs every few seconds: it lists every job
whose inputs are known (done or not), so a run continues wherever the last one stopped.
The predecessor's helpers (``experiments/headline_h100/run.py``: job ids, the state
file, the search-front region, the size strata) are imported, not copied.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from nas.errors import ConfigError  # noqa: E402
from nas.latency.target import Target  # noqa: E402
from nas.space import ArchConfig, SearchSpace, load_space  # noqa: E402


def load_module(name: str, path: Path) -> Any:
    """A module by its path: both experiment folders hold a ``run.py`` and a ``jobs.py``."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


h100 = load_module("headline_h100_run", ROOT / "experiments" / "headline_h100" / "run.py")
job_id, load_state, front_region, stratified = h100.job_id, h100.load_state, h100.front_region, h100.stratified

SEEDS = (0, 1)            # standalone seeds: the recipe's seed + this
BUDGET_FRACTION = 0.5     # the decode budget: this fraction of the baseline's predicted decode_ms
KV_CHOICES = (1, 2, 4)    # uniform grouped-query attention: every layer this many key/value heads
SUPERNET = "supernet"
SMOKE_VOCAB = 320         # the smoke corpus's tokenizer
# The two searches: by the supernet's inherited-weight validation loss, and by the free
# parameter-count proxy of LTS (its value is -decoder_params / 1e6: not a loss).
SCORERS = {"supernet": "supernet validation loss (inherited weights)",
           "lts_proxy": "LTS proxy: -decoder_params / 1e6 (lower = more decoder parameters; not a loss)"}


@dataclass(frozen=True)
class Setup:
    """What differs between the GPU run and the CPU smoke run."""

    space: str = "gpt2s"
    space_overrides: dict = field(default_factory=dict)  # the smoke's vocabulary and context
    recipe: str = "gpt2s"                  # models trained alone (conf/train/gpt2s.yaml)
    supernet_recipe: str = "gpt2s_supernet"
    target: str = "h200-fused"
    target_overrides: dict = field(default_factory=dict)  # Target fields (the smoke's tables)
    precision: str = "bf16"
    data: str | None = None                # None: the recipes' corpus
    n_trials: int = 300
    n_region: int = 12
    n_stratified: int = 12
    n_top: int = 3
    train: dict = field(default_factory=dict)           # overrides of the standalone recipe
    supernet_train: dict = field(default_factory=dict)
    latency_repeats: int = 20
    latency_passes: int = 2
    request_repeats: int = 5


def smoke_setup(work: Path) -> Setup:
    """The CPU smoke run: the `tiny_gqa` space, a tiny corpus and tables measured here,
    both under ``work`` (``run.prepare_smoke``)."""
    corpus, tables = work / "smoke-corpus", work / "tables"
    steps = {"batch_size": 4, "device": "cpu", "eval_batches": 1, "compile": False, "eval_every": 0,
             "data": str(corpus)}
    return Setup(space="tiny_gqa", space_overrides={"vocab_size": SMOKE_VOCAB, "block_size": 32}, recipe="tiny", supernet_recipe="tiny",
                 target="cpu", precision="fp32", data=str(corpus), n_trials=12, n_region=2,
                 n_stratified=2, n_top=2,
                 target_overrides={"table": str(tables / "cpu-tiny_gqa.csv"), "batch_size": 32,
                                   "prompt_len": 16, "new_tokens": 8, "context": 32},
                 train={**steps, "steps": 6, "patience": 0}, supernet_train={**steps, "steps": 8},
                 latency_repeats=3, latency_passes=1, request_repeats=2)


def space_of(s: Setup) -> SearchSpace:
    return dataclasses.replace(load_space(s.space), **s.space_overrides)


def target_of(s: Setup) -> Target:
    return dataclasses.replace(Target.load(s.target), **s.target_overrides)


@functools.lru_cache(maxsize=None)
def _cost(space_json: str, target_json: str, batch_size: int | None, phases: tuple[str, ...]) -> Any:
    """The target's cost model (tables read once: the plan is rebuilt every few seconds),
    or the one-line reason it cannot be loaded."""
    from nas.latency.predict import CostModel
    try:
        return CostModel.for_target(Target(**json.loads(target_json)), load_space(json.loads(space_json)),
                                    batch_size=batch_size, phases=phases)
    except ConfigError as e:
        return str(e)


def cost_model(space: SearchSpace, target: Target, batch_size: int | None = None,
               phases: tuple[str, ...] = ("decode",)) -> Any:
    return _cost(json.dumps(space.to_dict(), sort_keys=True),
                 json.dumps(dataclasses.asdict(target), sort_keys=True), batch_size, phases)


def uniform_archs(space: SearchSpace, base: ArchConfig, gqa: bool) -> list[ArchConfig]:
    """Every architecture with all layers alike and no dimension above the baseline's:
    full multi-head attention, or (``gqa``) fewer key/value heads from :data:`KV_CHOICES`."""
    out = []
    for L in range(space.n_layer_min, base.n_layer + 1):
        for d in (x for x in space.d_model if x <= base.d_model):
            for h in (x for x in space.n_head if x <= base.n_head[0] and x * space.head_dim <= d):
                kvs = [g for g in KV_CHOICES if g < h and g in space.kv_choices(h)] if gqa else [h]
                for f in (x for x in space.d_ff if x <= base.d_ff[0]):
                    out += [space.make(L, d, [h] * L, [f] * L, base.precision,
                                       None if g == h else [g] * L) for g in kvs]
    return out


class Plan:
    """Which jobs exist, given the results so far."""

    def __init__(self, s: Setup, results: dict[str, dict[str, Any]], cost: Any = None):
        """``cost``: predicts ``decode_ms`` (default: the target's decode table, or the
        reason it cannot be loaded)."""
        self.s, self.results = s, results
        self.space, self.target = space_of(s), target_of(s)
        self.baseline = self.space.baseline_arch(s.precision)
        self.cost = cost if cost is not None else cost_model(self.space, self.target)
        self.missing_table = self.cost if isinstance(self.cost, str) else None
        self.budget = (None if self.missing_table else
                       round(BUDGET_FRACTION * self.cost.decode_ms(self.baseline), 5))

    def done(self, job: dict[str, Any]) -> dict[str, Any] | None:
        r = self.results.get(job_id(job))
        return None if r is None or r.get("failed") else r

    def decode_ms(self, arch: ArchConfig) -> float:
        return self.cost.decode_ms(arch)

    # -- jobs --------------------------------------------------------------------------
    def _train(self, overrides: dict) -> dict:
        return {**overrides, **({"data": self.s.data} if self.s.data else {})}

    def supernet_job(self) -> dict[str, Any]:
        return {"kind": "supernet", "name": SUPERNET, "space": self.space.to_dict(),
                "recipe": self.s.supernet_recipe, "train": self._train(self.s.supernet_train)}

    def search_job(self, scorer: str) -> dict[str, Any]:
        return {"kind": "search", "name": f"search-{scorer}", "scorer": scorer,
                "accuracy_objective": SCORERS[scorer], "space": self.space.to_dict(),
                "target": dataclasses.asdict(self.target), "budget_ms": self.budget,
                "n_trials": self.s.n_trials, "seed": 0, "supernet": SUPERNET,
                "recipe": self.s.supernet_recipe, "train": self._train(self.s.supernet_train)}

    def score_job(self, archs: list[ArchConfig]) -> dict[str, Any]:
        return {"kind": "score", "supernet": SUPERNET, "space": self.space.to_dict(),
                "recipe": self.s.supernet_recipe, "train": self._train(self.s.supernet_train),
                "archs": [a.to_dict() for a in archs]}

    def alone_job(self, arch: ArchConfig, seed: int, role: str) -> dict[str, Any]:
        """Trained alone (``experiments/headline_h100/jobs.py``'s ``alone`` job); the role
        is left out of the job's id, so an architecture wanted twice is trained once."""
        return {"kind": "alone", "arch": arch.to_dict(), "seed": 1337 + seed, "init": "scratch",
                "recipe": self.s.recipe, "train": self._train(self.s.train), "role": role}

    def latency_job(self, arch: ArchConfig) -> dict[str, Any]:
        return {"kind": "latency", "arch": arch.to_dict(), "target": dataclasses.asdict(self.target),
                "batch_sizes": sorted({self.target.batch_size, 1}, reverse=True),
                "repeats": self.s.latency_repeats, "passes": self.s.latency_passes,
                "request_repeats": self.s.request_repeats}

    # -- architectures -----------------------------------------------------------------
    def references(self) -> list[tuple[str, str, ArchConfig]]:
        """(role, variant, arch): the baseline; the uniform shrinks within the budget (for
        each way of shrinking, the one with the most decoder parameters); the baseline with
        every layer at k key/value heads; and per k the uniform shrink with k key/value heads
        within the budget with the most decoder parameters (absent where that is the
        unshrunk one already listed). Which of each group is best is decided by test loss
        (``report.py``), not here."""
        b = self.baseline
        out = [("baseline", "GPT-2 small's shape", b)]
        if self.budget is None:
            return out
        within = [a for a in uniform_archs(self.space, b, gqa=False)
                  if a != b and self.decode_ms(a) <= self.budget]
        ways = {"fewer layers": lambda a: a.d_model == b.d_model and a.n_head[0] == b.n_head[0]
                and a.d_ff[0] == b.d_ff[0],
                "narrower": lambda a: a.n_layer == b.n_layer and a.d_ff[0] == b.d_ff[0]
                and a.d_model < b.d_model,
                "fewer heads": lambda a: a.n_layer == b.n_layer and a.d_ff[0] == b.d_ff[0]
                and a.d_model == b.d_model,
                "smaller FFN": lambda a: a.n_layer == b.n_layer and a.d_model == b.d_model
                and a.n_head[0] == b.n_head[0],
                "most decoder parameters": lambda a: True}
        for way, keep in ways.items():
            cands = [a for a in within if keep(a)]
            if cands:
                out.append(("uniform shrink", way, self._most_params(cands)))
        L, h = b.n_layer, b.n_head[0]
        for g in (g for g in KV_CHOICES if g < h and g in self.space.kv_choices(h)):
            out.append(("uniform GQA", f"kv {g}", dataclasses.replace(b, n_kv_head=(g,) * L)))
        combos = uniform_archs(self.space, b, gqa=True)
        for g in KV_CHOICES:
            cands = [a for a in combos if a.n_kv_head[0] == g and self.decode_ms(a) <= self.budget]
            if cands:
                out.append(("uniform GQA + shrink", f"kv {g}", self._most_params(cands)))
        seen: set[str] = set()
        return [r for r in out if not (r[2].arch_id in seen or seen.add(r[2].arch_id))]

    def _most_params(self, archs: list[ArchConfig]) -> ArchConfig:
        return max(archs, key=lambda a: (a.decoder_params, -self.decode_ms(a), a.arch_id))

    def search(self, scorer: str) -> dict[str, Any] | None:
        return None if self.budget is None else self.done(self.search_job(scorer))

    def top(self, search: dict[str, Any], n: int) -> list[ArchConfig]:
        """The ``n`` best by score of the search's Pareto front within the budget (then,
        if the front is shorter, the best other feasible trials)."""
        ok = [t for t in search["trials"] if t["feasible"] and t["score"] is not None]
        ok.sort(key=lambda t: (not t["pareto"], t["score"], t["decode_ms"]))
        out: dict[str, ArchConfig] = {}
        for t in ok:
            out.setdefault(ArchConfig.from_dict(t["arch"]).arch_id, ArchConfig.from_dict(t["arch"]))
        return list(out.values())[:n]

    def headline(self) -> list[tuple[str, str, ArchConfig]]:
        """(role, variant, arch) of every headline model known so far."""
        out = self.references()
        sup, proxy = self.search("supernet"), self.search("lts_proxy")
        if proxy is not None:
            out += [("LTS proxy pick", "most decoder parameters within the budget", a)
                    for a in self.top(proxy, 1)]
        if sup is not None:
            out += [("searched", f"top {i + 1}", a) for i, a in enumerate(self.top(sup, self.s.n_top))]
        return out

    def ranking_archs(self) -> tuple[list[tuple[str, ArchConfig]], bool]:
        """(source, arch) of the ranking study, and whether the list is complete yet."""
        strat = [("stratified", a) for a in stratified(self.space, self.s.n_stratified, 0,
                                                       (self.s.precision,))]
        sup = self.search("supernet")
        if sup is None:
            return strat, False
        seen = {a.arch_id for _, a in strat}
        trials = [{**t, "val_loss": t["score"], "latency_ms": t["decode_ms"]} for t in sup["trials"]]
        region = [a for a in front_region(trials, self.s.n_region + len(strat))
                  if a.arch_id not in seen][: self.s.n_region]
        return [("search front", a) for a in region] + strat, True

    def jobs(self) -> list[tuple[int, dict[str, Any], list[str]]]:
        """(priority, job, supernets it needs): lower priorities go first."""
        out: list[tuple[int, dict[str, Any], list[str]]] = []
        if self.budget is not None:  # else a supernet trained now would be lost with its machine
            out += [(0, self.supernet_job(), []), (1, self.search_job("supernet"), [SUPERNET]),
                    (1, self.search_job("lts_proxy"), [])]
        heads = self.headline()
        complete = self.search("supernet") is not None and self.search("lts_proxy") is not None
        for role, _, a in heads:
            out += [(4, self.alone_job(a, sd, role), []) for sd in SEEDS]
            if complete:  # alone on the GPU, once every headline model is known
                out.append((-1, self.latency_job(a), []))
        ranking, ranked = self.ranking_archs()
        out += [(5, self.alone_job(a, sd, "ranking"), []) for _, a in ranking for sd in SEEDS]
        if ranked and complete:
            archs = list({a.arch_id: a for a in [a for _, a in ranking] + [a for _, _, a in heads]}.values())
            out.append((2, self.score_job(archs), [SUPERNET]))
        return out
