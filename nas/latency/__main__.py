"""``python -m nas.latency build|predict|validate|check`` (Hydra; ``conf/latency.yaml``).

The verb may be given bare (``python -m nas.latency validate``) or as ``verb=validate``.
Hydra stops here: the config is turned into typed objects and nothing below sees it.
The hardware target's workload (``hardware.workload``, ``target.py``) gives
the defaults of ``latency.mode``, ``latency.batch_size`` and, for decode,
``latency.seq_len`` (the context) and ``latency.prompt_len``; the table's path follows
from the target's table and the workload (``naming.py``) unless ``latency.table`` is set.
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nas.errors import ConfigError, exit_on_user_error
from nas.locks import exclusive, lock_path
from nas.latency.measure import CPU_CLOCKS, TimerSettings
from nas.latency.naming import table_path
from nas.latency.spec import MODES, PHASES, Workload
from nas.latency.target import Target, own_table
from nas.outputs import check_file, check_folder
from nas.space import ArchConfig, SearchSpace, load_space

VERBS = ("build", "predict", "validate", "check")


@dataclass(frozen=True)
class Command:
    """One invocation, typed."""

    verb: str
    space: SearchSpace
    table: Path
    workload: Workload
    seq_len_given: bool
    timer: TimerSettings
    graph_calls: int
    progress: bool
    calibration_n: int
    calibration_seed: int
    validate_n: int
    validate_seed: int
    validate_precisions: tuple[str, ...] | None
    validate_out: Path
    noise_models: int
    noise_repeats: int
    predict_arch: Path | None
    command: str
    target: Target
    validate_requests: int = 0
    new_tokens: int = 1
    check_n: int = 20
    check_seed: int = 3000
    check_out: Path | None = None
    local: bool = False              # hardware.local: the target means this machine
    default_table: Path | None = None  # the target's own table (conf/hardware/<name>.yaml)


def _int(cfg: DictConfig, key: str, minimum: int = 0) -> int:
    v = OmegaConf.select(cfg, key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"{key}: {v!r} must be an integer >= {minimum}")
    return v


def _choice(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> str:
    v = OmegaConf.select(cfg, key)
    if v not in allowed:
        raise ConfigError(f"{key}: {v!r} is not allowed; choose one of {list(allowed)}")
    return str(v)


def _precisions(cfg: DictConfig, key: str) -> tuple[str, ...] | None:
    v = OmegaConf.select(cfg, key)
    if v is None:
        return None
    if isinstance(v, str):
        return (v,)
    return tuple(str(p) for p in v)


def _hardware_name() -> str:
    """``hardware=<name>`` as chosen (for messages), when Hydra runs the command."""
    from hydra.core.hydra_config import HydraConfig
    try:
        return str(HydraConfig.get().runtime.choices.get("hardware") or "hardware")
    except ValueError:  # composed outside hydra.main (tests)
        return "hardware"


def parse(cfg: DictConfig, argv: list[str]) -> Command:
    """Turn the Hydra config into a :class:`Command` (ConfigError names a bad key)."""
    verb = _choice(cfg, "verb", VERBS)
    space = load_space(OmegaConf.to_container(cfg.search_space, resolve=True))
    device = _choice(cfg, "hardware.device", ("cpu", "cuda"))
    if not cfg.hardware.get("table"):
        raise ConfigError("hardware.table: the target names no table")
    target = Target.from_dict(_hardware_name(), OmegaConf.to_container(cfg.hardware, resolve=True))
    workload, table, seq_given = _workload(cfg, space, target, device)
    timer = _timer(cfg, workload)
    cal_n = _int(cfg, "calibration.n")
    if 0 < cal_n < 4:
        raise ConfigError(f"calibration.n: {cal_n}; use 0 (no correction) or at least 4")
    cal_seed, val_seed = _int(cfg, "calibration.seed"), _int(cfg, "validate.seed")
    if verb == "validate" and cal_seed == val_seed:
        raise ConfigError(f"validate.seed: {val_seed} equals calibration.seed; validation needs "
                          "architectures no correction was fitted on")
    out = cfg.validate.out or f"experiments/latency_{table.stem.replace('-', '_')}"
    arch = cfg.predict.arch
    if verb == "predict" and not arch:
        raise ConfigError("predict.arch: give the architecture YAML to predict, e.g. "
                          "predict.arch=outputs/best.yaml")
    new_tokens = (_int(cfg, "validate.new_tokens", 1) if cfg.validate.new_tokens is not None
                  else target.new_tokens or workload.seq_len - (workload.prompt_len or 0) + 1)
    check_out = OmegaConf.select(cfg, "check.out")
    # Its file's table, to tell one named with hardware.table=... from the target's own
    # (None: a target composed from elsewhere, whatever it names is its own).
    own = own_table(target.name)
    default_table = Path(own) if own else None
    return Command(
        verb=verb, space=space, table=table, workload=workload, seq_len_given=seq_given,
        timer=timer, graph_calls=_int(cfg, "latency.graph_calls", 1),
        progress=bool(cfg.latency.progress), calibration_n=cal_n, calibration_seed=cal_seed,
        validate_n=_int(cfg, "validate.n", 2), validate_seed=val_seed,
        validate_precisions=_precisions(cfg, "validate.precisions"), validate_out=Path(str(out)),
        noise_models=_int(cfg, "validate.noise_models"),
        noise_repeats=_int(cfg, "validate.noise_repeats", 1),
        predict_arch=Path(str(arch)) if arch else None,
        command="python -m nas.latency " + " ".join(shlex.quote(a) for a in argv),
        target=target, validate_requests=_int(cfg, "validate.requests"), new_tokens=new_tokens,
        check_n=_int(cfg, "check.n", 1), check_seed=_int(cfg, "check.seed"),
        check_out=Path(str(check_out)) if check_out else None,
        local=bool(cfg.hardware.get("local", False)) and not cfg.latency.table,
        default_table=default_table)


def _workload(cfg: DictConfig, space: SearchSpace, target: Target,
              device: str) -> tuple[Workload, Path, bool]:
    """What is measured (the target's workload unless ``latency.*`` says otherwise), the
    table it goes to, and whether ``latency.seq_len`` was given."""
    phase = _choice(cfg, "latency.phase", PHASES)
    given = {k: OmegaConf.select(cfg, f"latency.{k}") is not None
             for k in ("mode", "batch_size", "seq_len", "prompt_len")}
    mode = _choice(cfg, "latency.mode", MODES) if given["mode"] else target.mode
    batch = _int(cfg, "latency.batch_size", 1) if given["batch_size"] else target.batch_size
    seq_given = given["seq_len"]
    seq_len = (_int(cfg, "latency.seq_len", 1) if seq_given else
               target.context or space.block_size if phase == "decode" else space.block_size)
    if seq_len > space.block_size:
        key = "latency.seq_len" if seq_given else "hardware.workload.context"
        raise ConfigError(f"{key}: {seq_len} exceeds the context of search space "
                          f"'{space.name}' ({space.block_size}); set {key}")
    prompt = None
    if phase == "decode":
        prompt = (_int(cfg, "latency.prompt_len", 1) if given["prompt_len"] else
                  target.prompt_len if (target.prompt_len or seq_len) < seq_len else None)
    base = Path(str(cfg.hardware.table))
    if mode != target.mode:  # the other mode's tables sit beside the target's
        base = base.with_name(f"{base.stem}-{mode}{base.suffix}")
    table = (Path(str(cfg.latency.table)) if cfg.latency.table else
             table_path(base, phase, batch, seq_len, space.block_size))
    precisions = _precisions(cfg, "latency.precisions") or space.precisions(device)
    for p in precisions:
        if p not in space.precisions(device):
            raise ConfigError(f"latency.precisions: {p!r} is not allowed by search space "
                              f"'{space.name}' on {device}; allowed: {list(space.precisions(device))}")
    try:
        workload = Workload(device, batch, seq_len, precisions, mode,
                            _int(cfg, "latency.threads", 1), phase, prompt)
    except ConfigError as e:
        raise ConfigError(f"latency.{e}") from None
    return workload, table, seq_given


def _timer(cfg: DictConfig, workload: Workload) -> TimerSettings:
    """How each measurement is timed (``latency.*``)."""
    device = workload.device
    clock = _choice(cfg, "latency.cpu_clock", CPU_CLOCKS)
    if device == "cpu" and clock == "thread" and workload.threads != 1:
        raise ConfigError(f"latency.cpu_clock: 'thread' times one thread, but latency.threads is "
                          f"{workload.threads}; use latency.cpu_clock=wall or latency.threads=1")
    window = OmegaConf.select(cfg, "latency.window_ms")
    if isinstance(window, bool) or not isinstance(window, (int, float)) or window <= 0:
        raise ConfigError(f"latency.window_ms: {window!r} must be a positive number")
    return TimerSettings(repeats=_int(cfg, "latency.repeats", 1), warmup=_int(cfg, "latency.warmup"),
                         window_ms=float(window), cpu_clock=clock,
                         passes=_int(cfg, "latency.passes", 1))


def run(c: Command, cfg_yaml: str = "") -> Any:
    """Carry out one command."""
    if c.verb == "build":
        return _build(c)
    import dataclasses

    from nas.latency.local import local_table

    got = local_table(c.table, local=c.local, default=c.default_table, space=c.space)
    c = dataclasses.replace(c, table=got.path)
    if c.verb == "predict":
        return _predict(c, got.note)
    return _check_or_validate(c, got.note, cfg_yaml)


def _build(c: Command) -> Any:
    from nas.latency.build import build_table

    check_file(c.table, "latency.table")  # before measuring, not when the first row is ready
    # Two builds of one table would both append every row: one at a time.
    with exclusive(lock_path(c.table), "latency.table", f"the table {c.table}"):
        table = build_table(c.table, c.space, c.workload, c.timer, calibration_n=c.calibration_n,
                            calibration_seed=c.calibration_seed, command=c.command,
                            graph_calls=c.graph_calls, progress=c.progress)
    print(f"built {table.describe()}")
    return table


def _predict(c: Command, note: str | None) -> float:
    from nas.latency.table import LatencyTable

    w = c.workload
    assert c.predict_arch is not None  # parse refuses predict without it
    arch = ArchConfig.from_yaml(c.predict_arch)
    table = LatencyTable.load(c.table, device=w.device, batch_size=w.batch_size,
                              seq_len=w.seq_len if c.seq_len_given else None, mode=w.mode,
                              phase=w.phase)
    ms = table.predict_ms(arch)
    if note:  # once it answers: a refused command says only why
        print(note, file=sys.stderr)
    how = "" if arch.precision in table.calibration else " (plain sum: table has no calibration)"
    per = " per output token" if table.phase == "decode" else ""
    print(f"{ms:.4f} ms{per}{how}  {arch.describe()}  [{table.describe()}]")
    if table.memory is not None:
        print(f"{table.memory.peak_bytes(arch) / 2**20:.3f} MiB peak memory of a request "
              f"(batch {table.memory.batch_size}, prompt {table.memory.prompt_len}, context "
              f"{table.memory.context})")
    return ms


def _check_or_validate(c: Command, note: str | None, cfg_yaml: str) -> Any:
    from nas.latency.table import LatencyTable

    w = c.workload
    table = LatencyTable.load(c.table, device=w.device, batch_size=w.batch_size,
                              seq_len=w.seq_len, mode=w.mode, phase=w.phase)
    table.check_covers(c.space, c.validate_precisions or table.precisions)
    if c.verb == "check":
        from nas.latency.check import check
        if c.check_out is not None:
            check_file(c.check_out, "check.out")
        if note:  # every check passed: a refused command says only why
            print(note, file=sys.stderr)
        return check(table, c.space, n=c.check_n, seed=c.check_seed, timer=c.timer,
                     progress=c.progress, out=c.check_out)
    from nas.latency.validate import validate
    check_folder(c.validate_out, "validate.out")  # before measuring, not when reporting
    prefill = None
    if c.validate_requests and table.phase == "decode":
        prefill = LatencyTable.load(table_path(c.table, "prefill", w.batch_size,
                                               int(table.prompt_len or 1), context=-1),
                                    space=c.space, device=w.device, batch_size=w.batch_size,
                                    seq_len=table.prompt_len, mode=w.mode, phase="prefill")
    precisions = c.validate_precisions or tuple(p for p in table.precisions
                                                if p in c.space.precisions(w.device))
    if note:  # every check passed: a refused command says only why
        print(note, file=sys.stderr)
    out = c.validate_out
    out.mkdir(parents=True, exist_ok=True)
    if cfg_yaml:
        (out / "config.yaml").write_text(cfg_yaml)
    return validate(table, c.space, precisions, n=c.validate_n, seed=c.validate_seed,
                    timer=c.timer, out_dir=out, command=c.command, noise_models=c.noise_models,
                    noise_repeats=c.noise_repeats, progress=c.progress, prefill=prefill,
                    requests=c.validate_requests, new_tokens=c.new_tokens)


def check_first(cfg: DictConfig) -> Command:
    """The command and the files it reads and writes, checked before Hydra makes its run
    folder (``nas.hydra_cli.CheckFirst``): a refused command leaves nothing behind."""
    from nas.latency.table import LatencyTable

    c = parse(cfg, sys.argv[1:])
    w = c.workload
    if c.verb == "build":
        from nas.latency.build import check_build

        check_file(c.table, "latency.table")
        check_build(c.table, c.space, w, c.timer, calibration_n=c.calibration_n,
                    calibration_seed=c.calibration_seed, graph_calls=c.graph_calls)
    elif c.verb == "predict":
        ArchConfig.from_yaml(c.predict_arch)
        if not c.local:  # a local target's table may be this machine's: run() finds it
            LatencyTable.load(c.table, device=w.device, batch_size=w.batch_size,
                              seq_len=w.seq_len if c.seq_len_given else None, mode=w.mode,
                              phase=w.phase)
    elif c.verb == "check" and c.check_out is not None:
        check_file(c.check_out, "check.out")
    elif c.verb == "validate":
        check_folder(c.validate_out, "validate.out")
    return c


@exit_on_user_error
def _main(cfg: DictConfig) -> None:
    from nas.hydra_cli import CheckFirst

    c = CheckFirst.take() or check_first(cfg)
    got = run(c, OmegaConf.to_yaml(cfg, resolve=True))
    if c.verb == "check" and not got["holds"]:
        sys.exit(1)  # the table does not hold here (2 is a user mistake)


def _bare_verb(argv: list[str]) -> list[str]:
    """``build`` -> ``verb=build``, so the verb can be given like a subcommand."""
    return [f"verb={a}" if a in VERBS else a for a in argv]


def cli() -> None:
    """``nas-latency`` / ``python -m nas.latency``: Hydra composes the config; one-line errors."""
    from nas.hydra_cli import launch
    from nas.signals import stop_cleanly

    sys.argv[1:] = _bare_verb(sys.argv[1:])
    verb = ([a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("verb=")] or ["build"])[-1]
    with stop_cleanly("kept: the table rows already measured; run the same command again to "
                      "measure the rest" if verb == "build" else
                      "nothing written: a report is written at the end of a run"
                      if verb != "check" else "nothing written"):
        launch("nas-latency", "latency", _main, VERBS)

if __name__ == "__main__":
    cli()
