"""Search spaces and architectures: sampling, ids, YAML, validation messages."""
from __future__ import annotations

import random

import pytest
import yaml

from nas.errors import ConfigError
from nas.space import ArchConfig, SearchSpace, genome_of, load_space, sample, suggest

SPACES = ["tiny", "shakespeare"]


def _space_dict(**over):
    d = {"name": "t", "n_layer": {"min": 1, "max": 4}, "d_model": [64, 128], "n_head": [1, 2, 4],
         "d_ff": [128, 256], "head_dim": 32, "precision": {"cpu": ["fp32", "int8"]}}
    d.update(over)
    return d


@pytest.mark.parametrize("name", SPACES)
@pytest.mark.parametrize("seed", range(5))
def test_sample_stays_in_space(name, seed):
    space = load_space(name)
    for device in space.precision:
        arch = sample(space, random.Random(seed), device=device)
        assert space.contains(arch, device)
        assert all(h * arch.head_dim <= arch.d_model for h in arch.n_head)


@pytest.mark.parametrize("name", SPACES)
def test_sample_is_seeded_and_leaves_global_random_alone(name):
    space = load_space(name)
    random.seed(123)
    before = random.getstate()
    a = [sample(space, random.Random(7)) for _ in range(3)]
    rng = random.Random(7)
    b = [sample(space, rng) for _ in range(3)]
    assert random.getstate() == before
    assert a[0] == a[1] == a[2] == b[0]
    assert len({x.arch_id for x in b}) > 1  # one rng keeps drawing new archs
    assert sample(space, 7) == a[0]  # an int seed is the same as Random(seed)


def test_arch_id_is_stable_and_distinct():
    space = load_space("tiny")
    # Pinned: ids name cache entries and files, so they must not change between versions.
    assert space.largest().arch_id == ArchConfig.from_dict(space.largest().to_dict()).arch_id
    assert space.largest().arch_id == "4e75ffe439ed"
    rng = random.Random(0)
    archs = {sample(space, rng) for _ in range(200)}
    assert len({a.arch_id for a in archs}) == len(archs)
    assert space.largest("fp32").arch_id != space.largest("int8").arch_id


def test_arch_yaml_round_trip(tmp_path):
    arch = sample(load_space("tiny"), 3)
    arch.to_yaml(tmp_path / "a.yaml", extra={"val_loss": 1.5})
    assert ArchConfig.from_yaml(tmp_path / "a.yaml") == arch
    assert yaml.safe_load((tmp_path / "a.yaml").read_text())["meta"] == {"val_loss": 1.5}


@pytest.mark.parametrize("name", SPACES)
def test_space_yaml_round_trip(name, tmp_path):
    space = load_space(name)
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(space.to_dict()))
    assert load_space(p) == space
    assert SearchSpace.from_dict(space.to_dict()) == space


def test_suggest_decodes_the_same_genome():
    optuna = pytest.importorskip("optuna")
    space = load_space("tiny")
    arch = sample(space, 5)
    trial = optuna.trial.FixedTrial(genome_of(arch, space))
    assert suggest(trial, space) == arch


@pytest.mark.parametrize("over, key, value", [
    ({"n_head": [1, 8]}, "n_head", "8"),                          # 8 x 32 > 128
    ({"d_model": [16, 128]}, "d_model", "16"),                     # no head fits 16
    ({"d_model": []}, "d_model", "empty"),
    ({"d_ff": []}, "d_ff", "empty"),
    ({"n_layer": {"min": 4, "max": 2}}, "n_layer", "4"),
    ({"n_layer": {"min": 0, "max": 2}}, "n_layer.min", "0"),
    ({"precision": {"cpu": ["fp8"]}}, "precision.cpu", "fp8"),
    ({"precision": {"cpu": ["fp16"]}}, "precision.cpu", "fp16"),   # not supported on cpu
    ({"precision": {"cuda": ["int8"]}}, "precision.cuda", "int8"),  # not supported on cuda
    ({"precision": {"tpu": ["fp32"]}}, "precision", "tpu"),
    ({"d_ff": [128, "wide"]}, "d_ff", "wide"),
    ({"colour": "red"}, "unknown", "colour"),
])
def test_space_errors_name_key_and_value(over, key, value):
    with pytest.raises(ConfigError) as e:
        SearchSpace.from_dict(_space_dict(**over))
    assert key in str(e.value) and value in str(e.value)


def test_invalid_yaml_file_is_a_config_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\nd_model: [64, 128\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_space(p)
    with pytest.raises(ConfigError, match="unknown space 'nope'"):
        load_space("nope")


@pytest.mark.parametrize("kw, key, value", [
    ({"n_head": (8,)}, "n_head[0]", "8"),
    ({"precision": "fp8"}, "precision", "fp8"),
    ({"d_ff": (128, 128)}, "d_ff", "2 entries"),
])
def test_arch_errors_name_key_and_value(kw, key, value):
    base = dict(n_layer=1, d_model=128, n_head=(4,), d_ff=(128,), head_dim=32)
    base.update(kw)
    with pytest.raises(ConfigError) as e:
        ArchConfig(**base)
    assert key in str(e.value) and value in str(e.value)


def test_precision_not_supported_on_device_is_named():
    space = load_space("tiny")
    arch = space.largest("fp16")
    assert space.contains(arch, "cuda") and not space.contains(arch, "cpu")
    with pytest.raises(ConfigError, match="precision fp16 .*allowed on cpu"):
        space.check(arch, "cpu")


ARCH = {"n_layer": 2, "d_model": 64, "n_head": [1, 2], "d_ff": [128, 256], "head_dim": 32}


@pytest.mark.parametrize("over, words", [
    ({"n_layer": "three"}, "n_layer: 'three' must be an integer"),
    ({"n_layer": True}, "n_layer: True must be an integer"),
    ({"n_head": ["a", "b"]}, "n_head[0]: 'a' must be an integer"),
    ({"n_head": 2}, "n_head: 2 must be a list"),
    ({"d_ff": "128,256"}, "d_ff: '128,256' must be a list"),
    ({"d_model": None}, "d_model: None must be an integer"),
    ({"d_model": 64.5}, "d_model: 64.5 must be an integer"),
    ({"head_dim": 0}, "head_dim: 0 must be a positive integer"),
    ({"d_ff": [128, -1]}, "d_ff[1]: -1 must be a positive integer"),
    ({"precision": 16}, "precision: 16 must be one of"),
])
def test_arch_of_wrong_types_names_the_key(over, words):
    with pytest.raises(ConfigError) as e:
        ArchConfig.from_dict({**ARCH, **over})
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("content, words", [
    (yaml.safe_dump({"arch": {**ARCH, "n_head": 2}}).encode(), "n_head: 2 must be a list"),
    (bytes(range(256)), "not a text file"),
    (b"arch: [1, 2]\n", "arch: [1, 2] must be a mapping"),
])
def test_arch_file_errors_name_the_file(tmp_path, content, words):
    path = tmp_path / "a.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        ArchConfig.from_yaml(path)
    assert str(e.value).startswith(f"{path}: ") and words in str(e.value)


# --- grouped-query attention and layers without attention ---------------------------
def test_gpt2s_baseline_is_gpt2_small():
    space = load_space("gpt2s")
    base = space.baseline_arch("bf16")
    assert (base.n_layer, base.d_model, set(base.n_head), set(base.d_ff)) == (12, 768, {12}, {3072})
    assert base.n_kv_head == base.n_head and not base.gqa
    assert 84e6 < base.decoder_params < 86e6  # GPT-2 small's 85 M non-embedding parameters
    assert base.kv_bytes_per_token(2) == 2 * 12 * 12 * 64 * 2


@pytest.mark.parametrize("seed", range(20))
def test_gpt2s_genome_round_trip(seed):
    optuna = pytest.importorskip("optuna")
    space = load_space("gpt2s")
    arch = sample(space, seed, device="cuda")
    assert space.contains(arch, "cuda")
    assert genome_of(arch, space).keys() == genome_of(space.largest(), space).keys()
    assert suggest(optuna.trial.FixedTrial(genome_of(arch, space)), space, device="cuda") == arch
    assert ArchConfig.from_dict(arch.to_dict()) == arch


def test_gpt2s_samples_cover_the_new_dimensions():
    space = load_space("gpt2s")
    archs = [sample(space, s, device="cuda") for s in range(200)]
    layers = [(h, g) for a in archs for h, g in zip(a.n_head, a.n_kv_head)]
    assert any(h == 0 for h, _ in layers)                 # attention removed
    assert {g for h, g in layers if 0 < g < h} == {1, 2, 4}  # every grouped choice
    assert any(0 < h == g for h, g in layers)             # full multi-head attention
    for h, g in layers:
        assert (h, g) == (0, 0) or h % g == 0


def test_kv_heads_leave_old_ids_alone_and_change_new_ones():
    space = load_space("tiny")
    mha = space.make(2, 128, [4, 4], [512, 512])
    assert "n_kv_head" not in mha.to_dict()
    assert space.make(2, 128, [4, 4], [512, 512], n_kv_head=[4, 4]).arch_id == mha.arch_id
    gqa = ArchConfig(2, 128, (4, 4), (512, 512), head_dim=32, n_kv_head=(1, 4))
    assert gqa.arch_id != mha.arch_id and gqa.describe().startswith("L2 d128 h[4/1,4]")


@pytest.mark.parametrize("kw, words", [
    ({"n_head": (4, 0), "n_kv_head": (4, 1)}, ["n_kv_head[1]", "0"]),
    ({"n_head": (4, 4), "n_kv_head": (3, 4)}, ["n_kv_head[0]", "3", "[1, 2, 4]"]),
    ({"n_head": (4, 4), "n_kv_head": (8, 4)}, ["n_kv_head[0]", "8"]),
    ({"n_head": (4, 4), "n_kv_head": (4,)}, ["n_kv_head", "1 entries"]),
])
def test_bad_kv_heads_are_named(kw, words):
    with pytest.raises(ConfigError) as e:
        ArchConfig(n_layer=2, d_model=128, d_ff=(64, 64), head_dim=32, **kw)
    assert all(w in str(e.value) for w in words)


def test_a_space_without_the_variants_refuses_them():
    space = load_space("tiny")
    problems = space.problems(ArchConfig(2, 128, (4, 0), (512, 512), head_dim=32,
                                         n_kv_head=(2, 0), vocab_size=65, block_size=64))
    assert any("n_head [0]" in p for p in problems)
    assert any("n_kv_head" in p for p in problems)
