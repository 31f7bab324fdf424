"""What a search minimises: the registry of objectives (``search.objectives``).

Every objective is one :class:`Objective` in :data:`REGISTRY`: its metric name (the
study's, the CSV column, the dashboard's), how to label it and name it in files, and
how to predict it from an architecture and the tables of the run (:func:`load_tables`):
``"prefill"``, the target's table (``hardware.table``), and ``"serving"``, a
``nas.latency.predict.CostModel`` of the target's workload (``hardware.workload``)
holding the phases the objectives ask for. ``val_loss`` is the one measured rather than
predicted: the supernet scores it, only for candidates within every budget (cheap
objective first). Any predicted objective can have a budget. Adding an objective is
adding an entry here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, Sequence, Union

from nas.errors import ConfigError

if TYPE_CHECKING:
    from nas.space import ArchConfig, SearchSpace

LOSS = "val_loss"


class Predictor(Protocol):
    """What a search asks of a latency table (``nas.latency.LatencyTable``, or any model of
    the hardware): the predicted latency of an architecture, in milliseconds."""

    def predict_ms(self, arch: ArchConfig) -> float: ...


# What a search predicts from: the prefill table alone, or the tables of every objective by
# kind (:func:`load_tables`: ``"prefill"``, ``"serving"``).
Tables = Union[Predictor, Mapping[str, Any]]
# The user attribute holding the loss of the baseline over budget (its value is +inf).
REFERENCE_LOSS = "reference_val_loss"


@dataclass(frozen=True)
class Objective:
    """One objective, minimised.

    Attributes:
        name: the metric name (study, ``trials.csv`` column, dashboard), unit included.
        label: the axis label of the plots.
        tag: its prefix in exported file names (``lat1.234ms``).
        unit: printed after values ('' for a count, which no target changes).
        fmt: how values are written in file names and summaries.
        serving: the phases of the target's workload tables it needs (``"decode"``,
            ``"prefill"`` at the request's prompt length).
        predict: ``predict(arch, tables) -> value``; None for the scored ``val_loss``.
    """

    name: str
    label: str
    tag: str
    unit: str = ""
    fmt: str = ".3f"
    serving: tuple[str, ...] = ()
    predict: Callable[[Any, Mapping[str, Any]], float] | None = None

    @property
    def can_budget(self) -> bool:
        """Only a predicted objective can have a budget: it is checked before scoring."""
        return self.predict is not None

    @property
    def constraint(self) -> str:
        """The trial's constraint key: ``latency_over_budget_ms``, ``params_over_budget``."""
        stem, _, unit = self.name.rpartition("_")
        return f"{stem}_over_budget_{unit}" if self.unit else f"{self.name}_over_budget"

    def show(self, value: float) -> str:
        """``0.412 ms``, ``12.3 MB``, ``104321``."""
        return f"{value:{self.fmt}}{' ' + self.unit if self.unit else ''}"


def _from(kind: str, method: str) -> Callable[[Any, Mapping[str, Any]], float]:
    return lambda arch, tables: float(getattr(tables[kind], method)(arch))


REGISTRY: dict[str, Objective] = {o.name: o for o in (
    Objective(LOSS, "validation loss (supernet weights)", "loss"),
    Objective("latency_ms", "predicted latency (ms)", "lat", "ms",
              predict=_from("prefill", "predict_ms")),
    Objective("decode_ms", "predicted decode time per token (ms)", "dec", "ms",
              serving=("decode",), predict=_from("serving", "decode_ms")),
    Objective("request_ms", "predicted request latency (ms)", "req", "ms",
              serving=("prefill", "decode"), predict=_from("serving", "request_ms")),
    Objective("peak_mem_mb", "predicted peak memory (MiB)", "mem", "MiB", ".2f",
              serving=("decode",), predict=_from("serving", "peak_memory_mb")),
    Objective("params", "parameters", "p", fmt=".0f", predict=lambda arch, tables: arch.n_params),
)}
DEFAULT = (LOSS, "latency_ms")


def check(names: Sequence[str], key: str = "search.objectives") -> tuple[str, ...]:
    """``names`` as a tuple, or a one-line ConfigError naming ``key``.

    Raises:
        ConfigError: an unknown name, a duplicate, or no ``val_loss``.
    """
    names = tuple(names)
    allowed = ", ".join(REGISTRY)
    for n in names:
        if n not in REGISTRY:
            raise ConfigError(f"{key}: {n!r} is not an objective; allowed: {allowed}")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(f"{key}: {list(names)} names {', '.join(twice)} twice; give each once")
    if LOSS not in names or len(names) < 2:
        raise ConfigError(f"{key}: {list(names)} must hold {LOSS} and at least one of "
                          f"{', '.join(n for n in REGISTRY if n != LOSS)}")
    return names


def check_budgets(budgets: Mapping[str, float], names: Sequence[str],
                  key: str = "search.budgets", where: str = "search.objectives") -> None:
    """Refuse a budget on an objective not searched, on ``val_loss``, or not positive."""
    allowed = ", ".join(n for n in names if REGISTRY[n].can_budget)
    for n, b in budgets.items():
        if n not in names:
            raise ConfigError(f"{key}.{n}: {n!r} is not in {where} ({', '.join(names)}); "
                              f"a budget is allowed on {allowed}")
        if not REGISTRY[n].can_budget:
            raise ConfigError(f"{key}.{n}: {n} is scored, not predicted, so it cannot have a "
                              f"budget; allowed: {allowed}")
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 < b < float("inf"):
            raise ConfigError(f"{key}.{n}: {b!r} must be a positive number "
                              f"({REGISTRY[n].unit or 'a count'})")


def describe_budgets(budgets: Mapping[str, float]) -> str:
    """``latency_ms <= 0.800 ms, peak_mem_mb <= 2.00 MB``, or ``no budget``."""
    return ", ".join(f"{n} <= {REGISTRY[n].show(b)}" for n, b in budgets.items()) or "no budget"


def of_study(study: Any) -> tuple[str, ...] | None:
    """The objectives of a study made by ``nas.search``, or None for another study.

    A study without metric names (made before they were written) and with two minimised
    objectives is read as the default pair.
    """
    if any(d.name != "MINIMIZE" for d in study.directions):
        return None
    names = study.metric_names
    if names is None:
        return DEFAULT if len(study.directions) == 2 else None
    try:
        return check(names)
    except ConfigError:
        return None


def load_tables(names: Sequence[str], hardware: Any, hardware_name: str, space: SearchSpace,
                prefill: Any) -> dict[str, Any]:
    """The tables the objectives ``names`` are predicted from, by kind.

    Args:
        names: the objectives.
        hardware: the target as composed (``nas.search.config.HardwareConfig``): its
            device, table and workload, overrides included.
        hardware_name: its name, for messages and the commands that build a table.
        space: the search space, which the tables must cover.
        prefill: the target's prefill table (``hardware.table``), already loaded.

    Raises:
        ConfigError: an objective needs a table the target does not have (the message
            names the table and the command that builds it).
    """
    tables: dict[str, Any] = {"prefill": prefill}
    need = [n for n in names if REGISTRY[n].serving]
    if need:
        import dataclasses

        from nas.latency.predict import CostModel
        from nas.latency.target import Target

        phases = tuple(p for p in ("prefill", "decode") if any(p in REGISTRY[n].serving for n in need))
        try:
            target = Target.from_dict(hardware_name, dataclasses.asdict(hardware))
            tables["serving"] = CostModel.for_target(target, space, phases=phases)
        except ConfigError as e:
            raise ConfigError(f"search.objectives: {', '.join(need)} cannot be predicted on "
                              f"hardware '{hardware_name}': {e}") from None
    return tables


def table_files(tables: Mapping[str, Any]) -> list[Any]:
    """The CSV of every table in ``tables`` (for the study's digest of what it measured)."""
    serving = tables.get("serving")
    extra = [] if serving is None else [t.path for t in (serving.prefill, serving.decode) if t]
    return [tables["prefill"].path, *extra]
