"""A method's settings declared once as a frozen dataclass: the Params derived from it, validation and
typed access."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mergebench.errors import MergeBenchError
from mergebench.merging.methods import METHODS, MethodSpec, Param
from mergebench.merging.methods.spec import params_of, setting

# TIES's settings as they were declared with Params before TiesSettings: the dataclass must give exactly these.
TIES_PARAMS = (
    Param("K", float, 0.3, "fraction of each task vector kept by magnitude", low=0.0, high=1.0),
    Param("lambda", float, 0.4, "scale of the merged task vector", low=0.0),
    Param("aggregation", str, "sum", "sum (reference) or mean (disjoint mean of the TIES paper)",
          choices=("sum", "mean")),
    Param("scope", str, "global", "trim threshold over the whole parameter set or per tensor",
          choices=("global", "tensor")),
    Param("threshold_set", str, "reference",
          "entries the global threshold ranks: reference = every tensor whose name lacks 'embed' "
          "(an untied lm_head included), merged = only the merged tensors",
          choices=("reference", "merged")),
)


@dataclass(frozen=True)
class Mine:
    scale: float = setting(1.0, "scale", low=0.0, high=2.0)
    lam: float = setting(0.4, "a keyword as a name", name="lambda")
    seed: int | None = setting(None, "optional seed")
    per_task: list[float] = setting([0.1], "one value or one per specialist")
    mode: str = setting("a", "mode", choices=("a", "b"))
    strict: bool = setting(False, "a flag")


def test_ties_declares_the_same_params_as_before():
    assert METHODS["ties"].params == TIES_PARAMS
    hp = METHODS["ties"].settings({"K": "0.2", "lambda": 1})
    typed = METHODS["ties"].typed(hp)
    assert (typed.K, typed.lam, typed.scope) == (0.2, 1.0, "global")
    with pytest.raises(AttributeError):
        typed.K = 0.5  # frozen


def test_a_dataclass_gives_typed_params_checked_as_params_are():
    spec = MethodSpec("mine", "a plug-in", lambda tau, ctx, hp: tau.sum(0), settings_type=Mine)
    assert [(p.name, p.type, p.default, p.optional) for p in spec.params] == [
        ("scale", float, 1.0, False), ("lambda", float, 0.4, False), ("seed", int, None, True),
        ("per_task", list, [0.1], False), ("mode", str, "a", False), ("strict", bool, False, False)]
    hp = spec.settings({"scale": "1.5", "seed": "7", "per_task": "0.1,0.2", "strict": "yes"})
    assert spec.typed(hp) == Mine(1.5, 0.4, 7, [0.1, 0.2], "a", True)
    assert spec.typed(spec.settings({})) == Mine()
    with pytest.raises(MergeBenchError, match=r"^method mine: setting scale=3.0 is outside \[0.0, 2.0\]$"):
        spec.settings({"scale": 3})
    with pytest.raises(MergeBenchError, match=r"^method mine: setting mode='c' must be one of a, b$"):
        spec.settings({"mode": "c"})
    with pytest.raises(MergeBenchError, match=r"^method mine: unknown setting 'lam' \(known: scale, lambda, "):
        spec.settings({"lam": 1})


def test_settings_that_are_not_declared_properly_are_refused():
    @dataclass
    class Loose:
        x: float = setting(1.0, "x")

    @dataclass(frozen=True)
    class Bare:
        x: float = 1.0

    @dataclass(frozen=True)
    class Odd:
        x: dict = setting(None, "a dict")

    with pytest.raises(MergeBenchError, match=r"Loose: a method's settings must be a frozen dataclass$"):
        params_of(Loose)
    with pytest.raises(MergeBenchError, match=r"Bare\.x: declare the field with setting\(default, help\)$"):
        params_of(Bare)
    with pytest.raises(MergeBenchError, match=r"Odd\.x: type .*dict.* is not one of int, float, str, bool, list$"):
        params_of(Odd)
    with pytest.raises(MergeBenchError, match=r"^method both: declare its settings as params or as settings_type"):
        MethodSpec("both", "", lambda tau, ctx, hp: tau, (Param("y", float, 1.0, "y"),), settings_type=Mine)
    with pytest.raises(MergeBenchError, match=r"^method plain declares no settings_type$"):
        MethodSpec("plain", "", lambda tau, ctx, hp: tau).typed({})


def test_every_built_in_method_declares_its_settings_as_a_dataclass():
    """Each built-in's settings are a frozen dataclass whose typed instance holds exactly the validated
    settings, in declaration order (the Params and their defaults are unchanged: see test_plugins)."""
    import dataclasses

    for name, spec in METHODS.items():
        assert spec.settings_type is not None, name
        hp = spec.settings({})
        typed = spec.typed(hp)
        assert list(dataclasses.astuple(typed)) == list(hp.values()), name
        assert [p.name for p in spec.params] == list(hp), name
    assert METHODS["dare"].typed(METHODS["dare"].settings({"p": "0.5"})).p == 0.5
    assert METHODS["soup"].typed(METHODS["soup"].settings({})).lam is None
