"""The headline GPU run's planning: which references, which architectures, which jobs."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "headline_h100"))

import run  # noqa: E402

from nas.latency import LatencyTable  # noqa: E402
from nas.space import load_space  # noqa: E402


@pytest.fixture(scope="module")
def shakespeare():
    return load_space("shakespeare"), LatencyTable.load(ROOT / "latency_tables/h100-shakespeare-graph.csv")


def test_uniform_shrinks_are_uniform_and_no_larger_than_the_baseline(shakespeare):
    space, table = shakespeare
    b = space.baseline_arch()
    budget = 0.5 * table.predict_ms(b.__class__(**{**b.to_dict(), "precision": "bf16"}))
    shrinks = run.uniform_shrinks(space, table, "bf16", budget)
    # one per depth below the baseline's, at its width, plus the widest that meets the budget
    assert [a.n_layer for a in shrinks[:-1]] == list(range(space.n_layer_min, b.n_layer))
    for a in shrinks:
        assert len(set(a.n_head)) == 1 and len(set(a.d_ff)) == 1 and a.precision == "bf16"
        assert a.n_layer <= b.n_layer and a.d_model <= b.d_model
        assert a.n_head[0] <= b.n_head[0] and a.d_ff[0] <= b.d_ff[0]
    within = shrinks[-1]
    assert table.predict_ms(within) <= budget
    for a in shrinks[:-1]:  # no uniform shrink within the budget has more parameters
        assert table.predict_ms(a) > budget or run.param_count(a) <= run.param_count(within)


def test_param_count_matches_the_model(shakespeare):
    from nas.model import GPT
    space, _ = shakespeare
    for arch in (space.smallest(), space.baseline_arch()):
        assert run.param_count(arch) == GPT(arch).num_params()


def test_front_region_takes_the_first_fronts_in_order():
    def t(loss, ms, d):
        a = {"n_layer": 2, "d_model": d, "n_head": [1, 1], "d_ff": [64, 64], "precision": "fp32",
             "head_dim": 32, "vocab_size": 65, "block_size": 64}
        return {"arch": a, "val_loss": loss, "latency_ms": ms, "feasible": True}
    trials = [t(1.0, 3.0, 64), t(2.0, 1.0, 96), t(1.5, 2.0, 128),   # the front
              t(2.5, 2.5, 160), t(3.0, 0.5, 192),                      # 0.5 ms joins the front
              t(2.2, 2.2, 224)]                                        # second front
    picked = run.front_region(trials, 4)
    assert [a.d_model for a in picked] == [192, 96, 128, 64]
    assert [a.d_model for a in run.front_region(trials, 5)][-1] == 224
    infeasible = [{**x, "feasible": False} for x in trials]
    assert run.front_region(infeasible, 3) == []


def test_a_training_wanted_in_two_roles_is_one_job(shakespeare):
    space, _ = shakespeare
    plan = run.Plan(run.Setup(), {}, Path("/nonexistent"))
    a = space.baseline_arch()
    assert run.job_id(plan.alone_job(a, 0, "baseline")) == run.job_id(plan.alone_job(a, 0, "ranking"))
    assert run.job_id(plan.alone_job(a, 0, "baseline")) != run.job_id(plan.alone_job(a, 1, "baseline"))


def test_the_plan_starts_with_the_supernets_and_the_size_strata():
    plan = run.Plan(run.Setup(), {}, Path("/nonexistent"))
    jobs = plan.jobs()
    kinds = sorted({j["kind"] for _, j, _ in jobs})
    assert kinds == ["alone", "supernet"]  # searches wait for the recipes to be chosen
    alone = [j for _, j, _ in jobs if j["kind"] == "alone"]
    assert len(alone) == run.N_STRATIFIED * len(run.SEEDS)
    assert plan.chosen_alpha() is None
    assert plan.headline_budget == pytest.approx(0.5 * min(plan.baseline_ms.values()), abs=1e-4)
