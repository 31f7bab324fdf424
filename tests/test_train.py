"""Supernet training: learning, checkpoints, resuming, refusing, the command line."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nas.supernet.checkpoint
import nas.supernet.standalone
from nas.errors import ConfigError
from nas.supernet.score import AccuracyScorer
from nas.space import SearchSpace
from nas.supernet.recipe import TrainConfig, lr_at, make_optimizer
from nas.supernet.standalone import measure_throughput, train_standalone
from nas.supernet.step import soft_cross_entropy, train_step
from nas.supernet.train import load_supernet, train_supernet

from conftest import MICRO

ROOT = Path(__file__).resolve().parents[1]
CFG = TrainConfig(steps=20, batch_size=8, lr=3e-3, min_lr=3e-4, warmup=2, n_random=1,
                  eval_every=10, eval_batches=2, device="cpu", log_every=5)


def _other_space() -> SearchSpace:
    return SearchSpace.from_dict({**MICRO, "name": "other", "d_ff": [32, 48]})


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def test_training_reduces_loss(micro_space, micro_corpus, tmp_path):
    cfg = dataclasses.replace(CFG, steps=40)
    path = train_supernet(micro_space, micro_corpus, cfg, tmp_path, progress=False)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 40 and ckpt["tokens_per_s"] > 0
    first, last = ckpt["history"][0], ckpt["history"][-1]
    assert last["loss"] < first["loss"] - 0.5
    assert last["val_largest"] < 3.5 and last["val_smallest"] < 3.8  # untrained: ~4.2
    assert (tmp_path / "log.csv").read_text().startswith("step,loss,lr,tokens_per_s,val_largest")


def test_checkpoint_round_trip(micro_space, micro_corpus, tmp_path):
    path = train_supernet(micro_space, micro_corpus, CFG, tmp_path, progress=False)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["space"] == micro_space.to_dict()
    assert TrainConfig.from_dict(ckpt["train"]) == CFG
    assert ckpt["corpus"] == {"chars": micro_corpus.chars, "path": micro_corpus.path,
                              "sha256": micro_corpus.sha256, "split": [0.9, 0.05, 0.05]}
    assert {"arch", "data", "torch"} <= set(ckpt["rng"]) and ckpt["optimizer"]["state"]
    net = load_supernet(path, micro_space)
    assert not net.training and net.meta["step"] == CFG.steps
    for k, v in net.state_dict().items():
        assert torch.equal(v, ckpt["model"][k])
    # The reported validation loss is the scorer's on the same windows.
    scorer = AccuracyScorer(net, micro_corpus, n_batches=CFG.eval_batches, batch_size=32)
    assert scorer(micro_space.largest()) == pytest.approx(ckpt["val"]["largest"], abs=1e-6)


def test_interrupted_run_resumes_exactly(micro_space, micro_corpus, tmp_path, monkeypatch):
    straight = train_supernet(micro_space, micro_corpus, CFG, tmp_path / "a", progress=False)

    real_save = nas.supernet.checkpoint.save_atomic

    def save_then_interrupt(obj, path):
        real_save(obj, path)
        raise KeyboardInterrupt

    monkeypatch.setattr("nas.supernet.train.save_atomic", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(micro_space, micro_corpus, CFG, tmp_path / "b", progress=False)
    monkeypatch.setattr("nas.supernet.train.save_atomic", real_save)
    assert torch.load(tmp_path / "b" / "supernet.pt", weights_only=True)["step"] == 10
    # Running the same command again continues from step 10 ...
    resumed = train_supernet(micro_space, micro_corpus, CFG, tmp_path / "b", progress=False)
    # ... and lands on the very weights of the uninterrupted run (RNG states restored).
    a, b = _weights(straight), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_explicit_resume_continues_from_saved_step(micro_space, micro_corpus, tmp_path):
    first = train_supernet(micro_space, micro_corpus, dataclasses.replace(CFG, steps=10),
                           tmp_path / "a", progress=False)
    path = train_supernet(micro_space, micro_corpus, CFG, tmp_path / "b", resume=first,
                          progress=False)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 20
    assert [r["step"] for r in ckpt["history"]][:2] == [5, 10]  # history carried over


def test_checkpoint_of_another_space_is_refused(micro_space, micro_corpus, tmp_path):
    path = train_supernet(micro_space, micro_corpus, CFG, tmp_path / "a", progress=False)
    other = _other_space()
    with pytest.raises(ConfigError, match="'micro'.*'other'"):
        train_supernet(other, micro_corpus, CFG, tmp_path / "b", resume=path, progress=False)
    with pytest.raises(ConfigError, match="'micro'.*'other'"):
        load_supernet(path, other)


def test_other_run_in_out_dir_is_not_overwritten(micro_space, micro_corpus, tmp_path):
    path = train_supernet(micro_space, micro_corpus, CFG, tmp_path, progress=False)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="another out_dir.*resume="):
        train_supernet(_other_space(), micro_corpus, CFG, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="another out_dir"):
        train_supernet(micro_space, micro_corpus, dataclasses.replace(CFG, lr=1e-2), tmp_path,
                       progress=False)
    assert path.read_bytes() == before


def test_failed_save_keeps_the_old_checkpoint(micro_space, micro_corpus, tmp_path, monkeypatch):
    out = tmp_path / "run"
    path = train_supernet(micro_space, micro_corpus, CFG, out, progress=False)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train_supernet(micro_space, micro_corpus, dataclasses.replace(CFG, steps=30), out,
                       progress=False)
    assert path.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["log.csv", "supernet.pt"]  # no temp left


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_load_supernet_rejects_non_checkpoints(tmp_path, content):
    p = tmp_path / "x.pt"
    p.write_bytes(content)
    with pytest.raises(ConfigError, match="not a supernet checkpoint"):
        load_supernet(p)
    with pytest.raises(ConfigError, match="not found"):
        load_supernet(tmp_path / "missing.pt")


def test_standalone_uses_same_loop(micro_space, micro_corpus):
    arch = micro_space.largest()
    r = train_standalone(arch, micro_corpus, CFG)
    assert r.arch_id == arch.arch_id and r.steps == CFG.steps and r.tokens_per_s > 0
    assert 1.0 < r.val_loss < 3.5
    again = train_standalone(arch, micro_corpus, CFG)
    assert again.val_loss == r.val_loss  # seeded


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_students_learn_from_labels_and_the_detached_teacher(micro_space, micro_corpus, alpha):
    """A step's gradient is the teacher's CE plus the student's (1-a) CE + a KD against the
    teacher's *detached* predictions: losing the label term, the weight or the detach fails."""
    import torch.nn.functional as F
    from nas.supernet.data import get_batch
    from nas.model import Supernet

    torch.manual_seed(0)
    net = Supernet(micro_space)
    x, y = get_batch(micro_corpus.train, 4, micro_space.block_size,
                     generator=torch.Generator().manual_seed(0))
    teacher, student = micro_space.largest(), micro_space.smallest()
    cfg = dataclasses.replace(CFG, lr=1e-9, min_lr=0.0, grad_clip=0.0, weight_decay=0.0)
    import contextlib
    train_step(net, make_optimizer(net, cfg), x, y, [teacher, student], alpha, 0.0,
               contextlib.nullcontext)
    got = _grads(net)

    net.zero_grad(set_to_none=True)
    t_logits = net(x, teacher)
    ce = lambda z: F.cross_entropy(z.flatten(0, 1), y.flatten())  # noqa: E731
    s_logits = net(x, student)
    probs = F.softmax(t_logits.detach(), dim=-1)
    (ce(t_logits) + (1 - alpha) * ce(s_logits) + alpha * soft_cross_entropy(s_logits, probs)).backward()
    want = _grads(net)
    assert got.keys() == want.keys()
    for n in want:
        assert torch.allclose(got[n], want[n], atol=1e-6), n

    if alpha > 0:  # the same with the teacher's graph kept: its weights would get the KD gradient
        net.zero_grad(set_to_none=True)
        t_logits = net(x, teacher)
        s_logits = net(x, student)
        leak = F.softmax(t_logits, dim=-1)
        (ce(t_logits) + (1 - alpha) * ce(s_logits) + alpha * soft_cross_entropy(s_logits, leak)).backward()
        leaked = _grads(net)
        assert any(not torch.allclose(got[n], leaked[n], atol=1e-6) for n in want)


def test_distillation_trains_the_supernet(micro_space, micro_corpus, tmp_path):
    cfg = dataclasses.replace(CFG, steps=40, distill_alpha=0.5)
    ckpt = torch.load(train_supernet(micro_space, micro_corpus, cfg, tmp_path, progress=False),
                      weights_only=True)
    assert ckpt["train"]["distill_alpha"] == 0.5
    assert ckpt["history"][-1]["val_smallest"] < 3.8  # untrained: ~4.2


def test_standalone_keeps_its_best_validation_and_stops_early(micro_space, micro_corpus, tmp_path):
    # A learning rate this high makes validation get worse after the first evaluations.
    arch = micro_space.largest()
    cfg = dataclasses.replace(CFG, steps=60, lr=0.3, min_lr=0.3, warmup=0, grad_clip=0.0,
                              eval_every=5, patience=2)
    r = train_standalone(arch, micro_corpus, cfg, n_batches=CFG.eval_batches,
                         save_to=tmp_path / "m.pt")
    vals = dict(r.history)
    assert r.best_step == min(vals, key=vals.get)
    assert r.steps == r.best_step + 2 * cfg.eval_every < 60  # stopped two validations later
    assert r.val_loss == pytest.approx(vals[r.best_step], abs=1e-5)  # the kept weights' loss
    assert r.test_loss == r.test_loss and r.test_loss != r.val_loss
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert saved["best_step"] == r.best_step and saved["test_loss"] == r.test_loss
    assert saved["corpus"]["split"] == [0.9, 0.05, 0.05]


def test_fine_tuning_starts_from_the_supernets_slices(micro_space, micro_corpus, tmp_path):
    from nas.supernet.score import split_loss
    net = load_supernet(train_supernet(micro_space, micro_corpus, CFG, tmp_path, progress=False))
    arch = micro_space.smallest()
    inherited = AccuracyScorer(net, micro_corpus, n_batches=2, batch_size=32)(arch)
    # With a vanishing learning rate the fine-tuned model is the inherited one.
    still = dataclasses.replace(CFG, steps=5, lr=1e-12, min_lr=0.0, weight_decay=0.0, eval_every=5)
    r = train_standalone(arch, micro_corpus, still, n_batches=2, init=net)
    assert r.init == "supernet"
    assert r.val_loss == pytest.approx(inherited, abs=1e-5)
    assert r.test_loss == pytest.approx(split_loss(net, micro_corpus, "test", arch), abs=1e-5)
    scratch = train_standalone(arch, micro_corpus, still, n_batches=2)
    assert scratch.val_loss > inherited + 0.3  # a random init is far worse
    with pytest.raises(ConfigError, match="not a sub-network"):
        train_standalone(dataclasses.replace(arch, d_model=64, n_head=(1,), d_ff=(32,)),
                         micro_corpus, still, init=net)


def test_scoring_refuses_a_supernet_of_another_split(micro_space, micro_corpus, tmp_path):
    from nas.supernet.data import load_corpus
    path = train_supernet(micro_space, micro_corpus, CFG, tmp_path, progress=False)
    other = load_corpus(micro_corpus.path, block_size=16, split=(0.8, 0.1, 0.1))
    with pytest.raises(ConfigError, match="split"):
        AccuracyScorer(load_supernet(path), other)
    with pytest.raises(ConfigError, match="split"):
        load_supernet(path, corpus=other)
    AccuracyScorer(load_supernet(path), micro_corpus)  # its own corpus: accepted


class _Clock:
    """A stand-in for ``time`` whose ``perf_counter`` advances one second per call."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


@pytest.mark.parametrize("n_archs", [1, 2])
def test_measure_throughput_counts_every_sub_network_pass(micro_space, micro_corpus, monkeypatch,
                                                          n_archs):
    from nas.model import Supernet

    monkeypatch.setattr(nas.supernet.standalone, "time", _Clock())  # start and stop one second apart
    archs = [micro_space.largest(), micro_space.smallest()][:n_archs]
    tps = measure_throughput(Supernet(micro_space), lambda: archs, micro_corpus, CFG,
                             steps=3, warmup_steps=1)
    # Timed steps only, each pass of each sub-network counted: 2 archs count double.
    assert tps == 3 * CFG.batch_size * micro_space.block_size * n_archs


def test_measure_throughput_trains_the_model_in_place(micro_space, micro_corpus):
    from nas.model import Supernet

    torch.manual_seed(0)
    model = Supernet(micro_space)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure_throughput(model, lambda: [micro_space.largest()], micro_corpus, CFG, steps=2,
                       warmup_steps=1)
    assert not model.training
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_schedule_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(steps=100, lr=1.0, min_lr=0.1, warmup=10)
    lrs = [lr_at(s, cfg) for s in range(100)]
    assert lrs[0] < lrs[9] < lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lr_at(100, cfg) == pytest.approx(0.1)


@pytest.mark.parametrize("d, key", [
    ({"stepz": 3}, "stepz"), ({"steps": 0}, "train.steps"), ({"lr": "fast"}, "train.lr"),
    ({"distill": True}, "train.distill_alpha"), ({"distill_alpha": 1.5}, "train.distill_alpha"),
    ({"patience": -1}, "train.patience"), ({"device": "tpu"}, "train.device"),
    ({"steps": 2.5}, "train.steps"), ({"min_lr": 1.0}, "train.min_lr"),
])
def test_train_config_errors_name_the_key(d, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        TrainConfig.from_dict(d)


@pytest.mark.parametrize("recipe, space", [("tiny", "tiny"), ("shakespeare", "shakespeare"),
                                           ("shakespeare_supernet", "shakespeare"),
                                           ("shakespeare_finetune", "shakespeare")])
def test_train_config_group_composes(recipe, space):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"train={recipe}", f"search_space={space}"])
    raw = OmegaConf.to_container(cfg, resolve=True)
    tcfg = TrainConfig.from_dict(raw["train"])
    assert SearchSpace.from_dict(raw["search_space"]).name == space
    assert raw["out_dir"] == f"outputs/supernets/{space}" and raw["resume"] is None
    if recipe == "tiny":
        assert tcfg.device == "cpu" and tcfg.dropout == 0.0
    else:  # nanoGPT's shakespeare-char batches and regularisation
        assert (tcfg.batch_size, tcfg.dropout, tcfg.distill_alpha) == (64, 0.2, 0.0)
    if recipe in ("shakespeare", "shakespeare_supernet"):
        assert (tcfg.lr, tcfg.min_lr, tcfg.warmup) == (1e-3, 1e-4, 100)
        assert tcfg.steps == (6000 if recipe == "shakespeare_supernet" else 3000)
    if recipe == "shakespeare_finetune":
        assert tcfg.lr < 1e-3 and tcfg.steps < 3000 and tcfg.patience > 0


def _cli(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "nas.supernet", f"hydra.run.dir={tmp_path}/hydra",
                           f"out_dir={tmp_path}/out", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("make_arg, match", [
    (lambda d: f"train.data={d}/missing.txt", "not found"),
    (lambda d: f"resume={d}/missing.pt", "not found"),
])
def test_cli_user_error_is_one_line(tmp_path, make_arg, match):
    p = _cli(tmp_path, make_arg(tmp_path))
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0]


def test_cli_invalid_space_is_one_line(tmp_path):
    group = tmp_path / "conf" / "search_space"
    group.mkdir(parents=True)
    (group / "bad.yaml").write_text("name: bad\nn_layer: {min: 3, max: 1}\nd_model: [64]\n"
                                    "n_head: [1]\nd_ff: [64]\nhead_dim: 32\nprecision: {cpu: [fp32]}\n")
    p = _cli(tmp_path, f"hydra.searchpath=[file://{tmp_path}/conf]", "search_space=bad")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == "error: bad: n_layer: min 3 > max 1; min must be <= max"


def test_cli_yaml_syntax_error_is_one_line(tmp_path):
    group = tmp_path / "conf" / "search_space"
    group.mkdir(parents=True)
    (group / "broken.yaml").write_text("name: broken\nd_model: [64, 128\n")
    p = _cli(tmp_path, f"hydra.searchpath=[file://{tmp_path}/conf]", "search_space=broken")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.yaml, line 3: not valid YAML" in lines[0]


def test_cli_trains_an_exported_architecture_alone(tmp_path):
    """An exported winner (arch + meta YAML) is accepted by ``python -m nas.supernet arch=...``."""
    import torch

    from nas.space import ArchConfig, load_space
    arch = load_space("tiny").smallest("int8")
    src = tmp_path / "winner.yaml"
    arch.to_yaml(src, {"predicted_latency_ms": 0.1, "val_loss": 2.5})
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(chr(32 + i % 60) for i in range(4000)))
    p = _cli(tmp_path, f"arch={src}", f"out_dir={tmp_path}/out", f"train.data={corpus}",
             "train.steps=3", "train.batch_size=2", "train.eval_every=0", "train.eval_batches=1",
             "train.device=cpu")
    assert p.returncode == 0, p.stderr
    ckpt = torch.load(tmp_path / "out" / f"standalone-{arch.arch_id}.pt", weights_only=False)
    assert ArchConfig.from_dict(ckpt["arch"]) == arch
    assert ckpt["train"]["steps"] == 3 and "validation loss" in p.stdout
    logs = list(tmp_path.glob("hydra/train.log"))  # Hydra's job log holds the run
    assert len(logs) == 1 and "test loss" in logs[0].read_text()


@pytest.mark.slow
def test_cli_fine_tunes_an_exported_architecture_from_the_supernet(tmp_path):
    from nas.supernet.data import load_corpus
    from nas.space import load_space
    space = load_space("tiny")
    text = tmp_path / "corpus.txt"
    text.write_text("".join(chr(32 + i % 60) for i in range(4000)))
    corpus = load_corpus(text, block_size=space.block_size)
    ckpt = train_supernet(space, corpus, dataclasses.replace(CFG, steps=2, eval_every=0),
                          tmp_path / "sn", progress=False)
    arch = space.smallest()
    src = tmp_path / "winner.yaml"
    arch.to_yaml(src)
    common = [f"arch={src}", f"train.data={text}", "train.steps=2", "train.batch_size=2",
              "train.eval_every=1", "train.eval_batches=1", "train.device=cpu"]
    p = _cli(tmp_path, *common, "init=supernet", f"supernet.checkpoint={ckpt}")
    assert p.returncode == 0, p.stderr
    saved = torch.load(tmp_path / "out" / f"finetuned-{arch.arch_id}.pt", weights_only=True)
    assert saved["init"] == "supernet" and "test loss" in p.stdout
    p = _cli(tmp_path, *common, "init=supernet")
    assert p.returncode == 2 and p.stderr.strip().startswith("error: supernet.checkpoint:")
    p = _cli(tmp_path, *common, "init=teacher")
    assert p.returncode == 2 and "allowed: scratch, supernet" in p.stderr


@pytest.mark.parametrize("n_random", [0, 3])
def test_sandwich_is_largest_smallest_and_seeded_fp32_samples(micro_space, n_random):
    import random

    from nas.supernet.step import sandwich

    state = random.getstate()
    archs = sandwich(micro_space, random.Random(7), n_random)
    assert random.getstate() == state  # its own rng only
    assert len(archs) == 2 + n_random
    assert archs[0] == micro_space.largest() and archs[1] == micro_space.smallest()
    assert all(a.precision == "fp32" and micro_space.contains(a) for a in archs)
    assert archs == sandwich(micro_space, random.Random(7), n_random)


def test_sandwich_draws_vary_with_the_rng(micro_space):
    import random

    from nas.supernet.step import sandwich

    rng = random.Random(0)
    drawn = {a for _ in range(20) for a in sandwich(micro_space, rng, 2)[2:]}
    assert len(drawn) > 5  # not a fixed pick: many architectures of the space come up


def test_a_picker_replaces_the_sandwich(micro_space, micro_corpus, tmp_path):
    calls = []

    def largest_only(space, rng, n_random):
        calls.append((space, n_random))
        return [space.largest()]

    cfg = dataclasses.replace(CFG, steps=4, eval_every=0)
    path = train_supernet(micro_space, micro_corpus, cfg, tmp_path / "a", progress=False,
                          picker=largest_only)
    assert calls == [(micro_space, cfg.n_random)] * cfg.steps
    default = train_supernet(micro_space, micro_corpus, cfg, tmp_path / "b", progress=False)
    a, b = _weights(path), _weights(default)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the picker, not the sandwich, trained


@pytest.mark.parametrize("arch", [
    dict(n_layer=1, d_model=16, n_head=[1], d_ff=[32]),       # the smallest
    dict(n_layer=2, d_model=32, n_head=[2, 1], d_ff=[32, 64]),  # full width, fewer heads and ffn
])
def test_a_sub_networks_step_leaves_weights_outside_its_slices_untouched(micro_space, micro_corpus,
                                                                        arch):
    from nas.supernet.data import get_batch
    from nas.model import GPT, Supernet

    torch.manual_seed(0)
    arch = micro_space.make(**arch)
    net = Supernet(micro_space)
    # The sub-network's own tensors have the shapes of its leading slices.
    slices = {k: tuple(slice(0, n) for n in v.shape) for k, v in GPT(arch).state_dict().items()}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = make_optimizer(net, dataclasses.replace(CFG, lr=1e-2, weight_decay=0.0))
    x, y = get_batch(micro_corpus.train, 4, micro_space.block_size,
                     generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        train_step(net, opt, x, y, [arch], 0.0, 1.0, contextlib.nullcontext)
    for name, after in net.state_dict().items():
        outside = torch.ones_like(after, dtype=torch.bool)
        if name in slices:
            outside[slices[name]] = False
            assert not torch.equal(after[slices[name]], before[name][slices[name]]), name
        assert torch.equal(after[outside], before[name][outside]), name



def test_recipes_load_without_hydra_as_hydra_composes_them():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["train=shakespeare_supernet"])
    assert TrainConfig.from_recipe("shakespeare_supernet") == \
        TrainConfig.from_dict(OmegaConf.to_container(cfg.train))
    assert TrainConfig.from_recipe("tiny", steps=7, lr=None).steps == 7
    with pytest.raises(ConfigError, match="'nope' unknown; available: .*shakespeare"):
        TrainConfig.from_recipe("nope")


@pytest.mark.slow
def test_compiled_training_alone_matches_eager(micro_space, micro_corpus):
    """train.compile: the same run through torch.compile, to rounding."""
    arch = micro_space.largest()
    cfg = dataclasses.replace(CFG, steps=6, eval_every=0)
    eager = train_standalone(arch, micro_corpus, cfg)
    compiled = train_standalone(arch, micro_corpus, dataclasses.replace(cfg, compile=True))
    assert compiled.val_loss == pytest.approx(eager.val_loss, rel=1e-3)


def test_a_compiled_supernet_is_refused(micro_space, micro_corpus, tmp_path):
    with pytest.raises(ConfigError, match="train.compile"):
        train_supernet(micro_space, micro_corpus, dataclasses.replace(CFG, compile=True),
                       tmp_path, progress=False)


@pytest.mark.parametrize("recipe", ["gpt2s", "gpt2s_supernet"])
def test_gpt2s_recipes_compose_with_their_space(recipe):
    """One pass of ~52 M tokens of the Linux corpus, the same for every sub-network."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"train={recipe}", "search_space=gpt2s"])
    raw = OmegaConf.to_container(cfg, resolve=True)
    tcfg = TrainConfig.from_dict(raw["train"])
    space = SearchSpace.from_dict(raw["search_space"])
    assert 50e6 <= tcfg.steps * tcfg.batch_size * space.block_size <= 103e6  # the train split
    assert tcfg.compile == (recipe == "gpt2s") and tcfg.data == ".corpus/linux/corpus"
