"""What a merging method is: a pure function over one tensor's stacked task vectors, plus typed settings.

A method sees `tau` with shape [T, *tensor_shape] (fp32, one row per specialist, τ_t = θ_t − θ_0) and
returns the merged task vector; the engine adds θ_0. Whatever a method needs beyond this tensor (a
global threshold per specialist, a seed, a global sign) arrives in the `TensorContext`, computed by the
engine, so the functions stay trivially testable.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mergebench.errors import MergeBenchError
from mergebench.merging.io.stats_store import KINDS, StatsKind


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its type, reference default, allowed values and meaning."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    low: float | None = None  # inclusive bounds for numbers
    high: float | None = None
    optional: bool = False  # None is a valid value (meaning documented in help)

    def coerce(self, owner: str, value: Any) -> Any:
        """`value` as this parameter's type, checked; errors name `owner` (e.g. "method ties")."""
        if value is None or (isinstance(value, str) and value.lower() in ("none", "auto")):
            if self.optional:
                return None
            raise MergeBenchError(f"{owner}: setting {self.name} needs a value")
        try:
            if self.type is bool and isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                out = value.lower() in ("true", "1", "yes")
            elif self.type is list:
                out = _float_list(value)
            else:
                out = self.type(value)
        except (TypeError, ValueError):
            raise MergeBenchError(
                f"{owner}: setting {self.name}={value!r} is not a valid {self.type.__name__}"
            ) from None
        if self.choices and out not in self.choices:
            raise MergeBenchError(f"{owner}: setting {self.name}={out!r} must be one of {', '.join(self.choices)}")
        for v in out if isinstance(out, list) else [out]:
            if isinstance(v, int | float) and not isinstance(v, bool):
                if (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
                    raise MergeBenchError(
                        f"{owner}: setting {self.name}={v} is outside [{self.low}, {self.high}]"
                    )
        return out


def setting(default: Any, help: str, *, name: str | None = None, choices: tuple[str, ...] | None = None,
            low: float | None = None, high: float | None = None, optional: bool = False) -> Any:
    """A field of a method's settings dataclass (see `params_of`): its default, meaning and allowed values,
    as a Param has them. `name`: the setting's name where it is no Python identifier (`lambda`)."""
    meta = {"help": help, "name": name, "choices": choices, "low": low, "high": high, "optional": optional}
    if isinstance(default, list):  # a dataclass wants a factory for a mutable default
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


SETTING_TYPES = (int, float, str, bool, list)


def params_of(settings: type) -> tuple[Param, ...]:
    """The settings a frozen dataclass declares, as Params in field order: each field's type (`X | None`
    makes it optional, `list[float]` a list), its `setting(...)` default, help, choices and bounds. So a
    method can declare its settings once, typed, and read them typed (`MethodSpec.typed`)."""
    owner = getattr(settings, "__qualname__", repr(settings))
    if not (dataclasses.is_dataclass(settings) and settings.__dataclass_params__.frozen):
        raise MergeBenchError(f"{owner}: a method's settings must be a frozen dataclass")
    hints = typing.get_type_hints(settings)
    params = []
    for f in dataclasses.fields(settings):
        meta = f.metadata
        if "help" not in meta:
            raise MergeBenchError(f"{owner}.{f.name}: declare the field with setting(default, help)")
        kind, optional = hints[f.name], meta["optional"]
        args = typing.get_args(kind)
        if type(None) in args:  # X | None
            optional, kind = True, next(a for a in args if a is not type(None))
        kind = typing.get_origin(kind) or kind
        if kind not in SETTING_TYPES:
            raise MergeBenchError(f"{owner}.{f.name}: type {kind!r} is not one of int, float, str, bool, list")
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        params.append(Param(meta["name"] or f.name, kind, default, meta["help"], meta["choices"], meta["low"],
                            meta["high"], optional))
    return tuple(params)


def _float_list(value: Any) -> list[float]:
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, str):
        return [float(v) for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
    return [float(v) for v in value]


@dataclass
class TensorContext:
    """What the engine knows about the tensor being merged beyond its task vectors."""

    name: str
    labels: list[str]
    thresholds: torch.Tensor | None = None  # per specialist |τ| threshold from the global pass
    zero_sign: float | None = None  # global elected-sign tie breaker (TIES), None: decide per tensor
    seed: int | None = None
    offset: int = 0  # flat index, in the whole tensor, of the first entry of the block being merged
    # Data-dependent methods: per specialist, this tensor's statistic (a Gram or a Fisher), or None when
    # the method keeps none for this tensor; and each statistics store's manifest (token counts, means).
    stats: list[torch.Tensor] | None = None
    stats_meta: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its function and everything the engine must prepare for it."""

    name: str
    summary: str
    fn: Callable[..., torch.Tensor]
    params: tuple[Param, ...] = ()
    # Global top-k: given settings and the number d of entries, the rank (k-th largest |τ|) each
    # specialist's threshold sits at; None when the method needs no global threshold.
    global_rank: Callable[[dict[str, Any], int], int] | None = None
    # Methods whose result depends on a sign summed over the whole parameter set (TIES's majority):
    # returns (merged under ctx.zero_sign, this tensor's sign sum, flat indices of the entries that
    # depend on it, their merged values under the opposite sign).
    with_sign: Callable[..., tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]] | None = None
    # with_sign computed piece by piece from the mapped checkpoints on the CPU (TaskVectorSource.pieces),
    # called with the piece stream, the context (zero_sign +1), the settings and the output dtype; returns
    # (θ_0 + merged as a flat tensor of that dtype, sign sum, flat indices, θ_0 + their merged values under
    # the opposite sign): the same bytes as θ_0 + with_sign's, without forming the [T, n] task vectors.
    with_sign_pieces: Callable[..., tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]] | None = None
    reference: str = ""
    # Which statistics the method reads, one store per specialist (`--stats`): a StatsKind of
    # merging/io/stats_store.py (GRAM, FISHER, MASK) or None, or a function of the settings giving one
    # (Localize-and-Stitch reads masks only when they are trained). A kind's name ("gram") is accepted too.
    stats_kind: StatsKind | str | None | Callable[[dict[str, Any]], StatsKind | str | None] = None
    # Methods that run validation data through models while merging (RegMean++): one source per expert.
    needs_data: bool = False
    # True (or true for these settings) when each output entry depends only on the same entry of the
    # inputs and on the context: the engine may then merge a large tensor a block of rows at a time.
    elementwise: bool | Callable[[dict[str, Any]], bool] = False
    # Optional check of the given settings (names the user set) against the completed ones: raises a
    # MergeBenchError for combinations that would be silently ignored.
    check: Callable[[set[str], dict[str, Any]], None] | None = None
    # The method's own global pass, in place of the plain one (merging/thresholds.py): called with the task
    # vector source, the ranked names, the names written back, the settings and a progress function.
    threshold_pass: Callable[..., torch.Tensor] | None = None
    # Methods whose merged task vector is scale·Σ_t τ_t, summed in specialist order (`sum_in_order`): the
    # scale for these settings and T specialists. On the CPU the engine then computes the merge straight
    # from the mapped checkpoints (TaskVectorSource.scaled_sum: the same floats, 30% less time); `fn`
    # still serves on GPUs and must agree.
    sum_scale: Callable[[dict[str, Any], int], float] | None = None
    # What `--compat reference` runs instead, where the reference code's defects change this method's result.
    reference_variant: MethodSpec | None = None
    # The settings as a frozen dataclass of `setting(...)` fields, in place of `params` (derived from it):
    # `typed(hp)` then gives the validated settings as an instance of it.
    settings_type: type | None = None

    def __post_init__(self):
        if self.settings_type is not None:
            derived = params_of(self.settings_type)
            if self.params and self.params != derived:  # (dataclasses.replace passes both, equal)
                raise MergeBenchError(f"method {self.name}: declare its settings as params or as settings_type, "
                                      "not both")
            object.__setattr__(self, "params", derived)

    def typed(self, hp: dict[str, Any]) -> Any:
        """Validated settings (`settings`) as an instance of `settings_type`, for attribute access."""
        if self.settings_type is None:
            raise MergeBenchError(f"method {self.name} declares no settings_type")
        names = {p.name: f.name for p, f in zip(self.params, dataclasses.fields(self.settings_type), strict=True)}
        return self.settings_type(**{names[k]: v for k, v in hp.items()})

    def settings(self, given: dict[str, Any]) -> dict[str, Any]:
        """Validate user settings against the parameters and fill in the defaults."""
        hp = check_settings(f"method {self.name}", self.params, given)
        if self.check is not None:
            self.check(set(given), hp)
        return hp

    def needs(self, hp: dict[str, Any]) -> Needs:
        """What the engine must prepare for this method under these settings: the one place that reads
        the settings which shape a merge's passes (`scope`, `threshold_set`) by name."""
        stats = self._stats(self.stats_kind(hp) if callable(self.stats_kind) else self.stats_kind)
        elementwise = self.elementwise(hp) if callable(self.elementwise) else bool(self.elementwise)
        return Needs(global_threshold=(self.global_rank is not None and hp.get("scope", "global") == "global"
                                       and stats is None),  # masks read from statistics need no threshold pass
                     threshold_set=hp.get("threshold_set", "reference"), sign_election=self.with_sign is not None,
                     stats=stats, data=self.needs_data, elementwise=elementwise)

    def _stats(self, kind: StatsKind | str | None) -> StatsKind | None:
        """The declared statistics kind as the kit's object; a one-line error for one the kit cannot make."""
        if kind is None or isinstance(kind, StatsKind):
            return kind
        if kind not in KINDS:
            raise MergeBenchError(f"method {self.name} reads statistics of kind {kind!r}; the kit makes "
                                  f"{', '.join(KINDS)}")
        return KINDS[kind]


@dataclass(frozen=True)
class Needs:
    """What one merge prepares for its method, decided from the method's declaration and settings."""

    global_threshold: bool  # one |τ| threshold per specialist over the ranked tensors (global_rank)
    threshold_set: str  # the tensors it ranks: "reference" (every tensor without 'embed') or "merged"
    sign_election: bool  # a majority sign summed over the whole parameter set (with_sign)
    stats: StatsKind | None  # the statistics kind read, one store per specialist (`--stats`)
    data: bool  # validation data run through the models while merging (`--data`)
    elementwise: bool  # large tensors may be merged a block of rows at a time


def check_settings(owner: str, params: tuple[Param, ...], given: dict[str, Any]) -> dict[str, Any]:
    """`given` validated against `params` (unknown names, types, bounds), completed with the defaults."""
    known = {p.name: p for p in params}
    for key in given:
        if key not in known:
            names = ", ".join(known) or "none"
            raise MergeBenchError(f"{owner}: unknown setting {key!r} (known: {names})")
    return {p.name: p.coerce(owner, given[p.name]) if p.name in given else p.default for p in params}


def sum_in_order(tau: torch.Tensor, from_zero: bool = False) -> torch.Tensor:
    """Σ_t τ_t over the first dimension, added in specialist order: one order on every machine (torch's
    own reduction orders some entries by vector width), the order the engine's streamed sums use too
    (TaskVectorSource.scaled_sum, TIES's pieces). `from_zero` starts from +0, as torch's sum does: a sum
    that comes to zero is then +0 whatever the signs of its zero terms."""
    total = torch.zeros_like(tau[0]) if from_zero else tau[0].clone()
    for t in tau[int(not from_zero):]:
        total += t
    return total


def threshold_mask(tau: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """|τ_t| ≥ threshold_t for each specialist row."""
    shape = (-1,) + (1,) * (tau.dim() - 1)
    return tau.abs() >= thresholds.to(tau.device).reshape(shape)


def kth_largest_abs(tau: torch.Tensor, rank: int) -> torch.Tensor:
    """Per specialist row, the rank-th largest |τ| of that row (rank 0: +inf, rank > d: 0).

    The same exact two-pass histogram as the global thresholds (2-3× faster than kthvalue)."""
    from mergebench.merging.topk import GlobalThreshold

    acc = GlobalThreshold(tau.shape[0], tau.device)
    acc.first_pass(tau)
    acc.choose([rank] * tau.shape[0])
    if acc.needs_second_pass:
        acc.second_pass(tau)
    return acc.thresholds()
