"""The stage DAG for one family: fetch → [finetune] → stats → merge → eval → report.

`tiny` runs every stage on CPU in this venv (the family is built, not downloaded); any other family
(a shipped MergeBench base by name, or a FAMILY.yaml: mergebench/catalog/families.py) fetches its
base and five specialists (hub ids, or local directories used in place), evaluates on the three
harnesses, and runs GPU stages in the harness images.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mergebench.catalog import DOMAIN_NAMES, validation_repo
from mergebench.catalog.families import Family, load_family
from mergebench.catalog.suites import SUITE_BY_NAME, SuiteMethod, select_methods
from mergebench.errors import MergeBenchError
from mergebench.pipeline.stage import Stage, stage_key

TUNED = "task_arithmetic_tuned"  # --methods name of the tiny profile's coefficient-tuning demo


@dataclass
class Plan:
    model: str
    stages: list[Stage] = field(default_factory=list)

    @property
    def by_name(self) -> dict[str, Stage]:
        return {s.name: s for s in self.stages}

    def add(self, stage: Stage) -> Stage:
        if stage.name in self.by_name:
            raise MergeBenchError(f"internal error: stage {stage.name} planned twice")
        missing = [n for n in stage.inputs.values() if n not in self.by_name]
        if missing:
            raise MergeBenchError(f"internal error: stage {stage.name} reads unplanned stage {missing[0]}")
        self.stages.append(stage)  # inputs always come first: the list is in topological order
        return stage

    def downstream(self, name: str) -> set[str]:
        out: set[str] = set()
        frontier = {name}
        while frontier:
            frontier = {s.name for s in self.stages if set(s.inputs.values()) & frontier} - out
            out |= frontier
        return out

    def assign_keys(self, image_id) -> None:
        keys: dict[str, str] = {}
        for s in self.stages:
            s.key = stage_key(s, {role: keys[n] for role, n in s.inputs.items()}, image_id(s.image))
            keys[s.name] = s.key


def build_plan(model: str, methods: list[str] | None = None, image_id=lambda image: image,
               stats_samples: int | None = None, eval_limit: int | None = None,
               scope: EvalScope | None = None) -> Plan:
    """`eval_limit` caps the rows per evaluation task (smoke runs and tests); it is part of the keys.
    `scope` narrows a hub plan's evaluations (EvalScope); the tiny profile has its own suite."""
    tuned = not methods or TUNED in methods
    names = [m for m in methods or [] if m != TUNED]
    builtin = [m for m in names if m in SUITE_BY_NAME]
    plugins = [m for m in names if m not in SUITE_BY_NAME]
    # no names (or only the tuning demo): the whole suite; only plug-ins: just them
    suite = (select_methods(builtin) if builtin or not plugins else ()) + tuple(map(plugin_method, plugins))
    if model == "tiny":
        plan = tiny_plan(suite, stats_samples or 64, eval_limit, tuned)
    else:
        scope = scope or EvalScope()
        if eval_limit is not None:
            scope = replace(scope, limit=eval_limit)
        plan = hub_plan(load_family(model), suite, stats_samples or 1000, scope)
    plan.assign_keys(image_id)
    return plan


def plugin_method(name: str) -> SuiteMethod:
    """A merging method from outside the kit (an installed plug-in's name, or `module.path:ATTRIBUTE`),
    planned with the statistics or data its spec declares under its default settings. Importing it
    needs the merging side (torch): only plans that ask for a plug-in pay that."""
    from mergebench.merging.methods import get_method

    spec = get_method(name)
    if spec.name in SUITE_BY_NAME:
        raise MergeBenchError(f"method {name!r}: the plug-in is named {spec.name!r}, like a built-in method; "
                              "give its MethodSpec another name")
    hp = spec.settings({})
    needs = spec.needs(hp)
    return SuiteMethod(spec.name, name, {}, stats=needs.stats.name if needs.stats else None, data=needs.data)


def _merge_and_stats(plan: Plan, suite: tuple[SuiteMethod, ...], family: str, samples: int, gpus: int) -> list[str]:
    merges = []
    for m in suite:
        inputs = {"family": family}
        if m.stats:
            for domain in DOMAIN_NAMES:
                name = f"stats/{m.stats}/{domain}"
                if name not in plan.by_name:
                    plan.add(Stage(name, "stats", {"kind": m.stats, "domain": domain, "samples": samples, "seed": 0},
                                   {"family": family}, "train", gpus))
                inputs[f"stats_{domain}"] = name
        settings = {**m.settings, "samples": samples} if m.data else m.settings
        plan.add(Stage(f"merge/{m.name}", "merge", {"method": m.method, "settings": settings, "data": m.data},
                       inputs, "train", gpus))
        merges.append(f"merge/{m.name}")
    return merges


def tiny_plan(suite: tuple[SuiteMethod, ...], samples: int, eval_limit: int | None = None,
              tuned: bool = True) -> Plan:
    plan = Plan("tiny")
    plan.add(Stage("fetch/tiny", "tiny_build", {"seed": 0}, {}, "train"))
    merges = _merge_and_stats(plan, suite, "fetch/tiny", samples, gpus=0)
    if tuned:  # the paper tunes coefficients on validation data; tiny shows how
        plan.add(Stage("tune/task_arithmetic", "tune",
                       {"method": "task_arithmetic", "grid": {"lambda": [0.2, 0.4, 0.6, 0.8, 1.0]},
                        "split": "validation"}, {"family": "fetch/tiny"}, "train"))
        merges.append("tune/task_arithmetic")
    evals = {}
    for model in ("base", *DOMAIN_NAMES, "multitask"):
        evals[model] = plan.add(Stage(f"eval/{model}", "eval", {"suite": "tiny", "model": model, "limit": eval_limit},
                                      {"family": "fetch/tiny"}, "lmeval")).name
    for name in merges:
        label = name.replace("/", ":")
        evals[label] = plan.add(Stage(f"eval/{label}", "eval", {"suite": "tiny", "model": label, "limit": eval_limit},
                                      {"family": "fetch/tiny", "model": name}, "lmeval")).name
    plan.add(Stage("report", "report", {"model": "tiny"}, {f"eval:{k}": v for k, v in evals.items()}, "train"))
    return plan


HARNESSES = ("lmeval", "bigcode", "safety")
HARNESS_IMAGES = {"lmeval": "lmeval", "bigcode": "bigcode", "safety": "safety"}


@dataclass(frozen=True)
class EvalScope:
    """What a hub plan evaluates: MergeBench's whole protocol by default; a slice (some harnesses, some
    tasks, some models, every stage on the CPU) for rehearsals and CI. Every field is in the stage keys."""

    harnesses: tuple[str, ...] = HARNESSES
    #: Task names of the chosen harnesses (None: all of MergeBench's).
    tasks: tuple[str, ...] | None = None
    #: Model labels to evaluate: base, a domain, multitask, merge:<method> (None: every one).
    models: tuple[str, ...] | None = None
    limit: int | None = None
    #: "gpu" (MergeBench's) or "cpu": no stage asks for a GPU and the harnesses are told so.
    device: str = "gpu"
    #: lm-eval --gen_kwargs for slices that must stay short (None: the tasks' own generation settings).
    gen_kwargs: str | None = None

    def __post_init__(self):
        unknown = [h for h in self.harnesses if h not in HARNESSES]
        if unknown or not self.harnesses:
            raise MergeBenchError(f"harness {unknown[0] if unknown else '(none)'!r}: expected some of "
                                  f"{', '.join(HARNESSES)}")
        if self.device not in ("gpu", "cpu"):
            raise MergeBenchError(f"device {self.device!r}: expected gpu or cpu")
        if self.device == "cpu" and "safety" in self.harnesses:
            raise MergeBenchError("safety-eval generates with vLLM and needs a GPU: leave out the safety harness "
                                  "on the CPU (harnesses lmeval,bigcode)")
        known = {t for h in self.harnesses for t in harness_tasks(h)}
        stray = [t for t in self.tasks or () if t not in known]
        if stray:
            raise MergeBenchError(f"task {stray[0]!r} is not one of the chosen harnesses' ({', '.join(self.harnesses)}): "
                                  f"{', '.join(sorted(known))}")

    def tasks_of(self, harness: str) -> tuple[str, ...]:
        every = harness_tasks(harness)
        return every if self.tasks is None else tuple(t for t in every if t in self.tasks)


def harness_tasks(harness: str) -> tuple[str, ...]:
    from mergebench.evaluation.adapters import ADAPTERS

    return ADAPTERS[harness].TASKS


def fetch_params(harness: str, tasks: tuple[str, ...]) -> dict:
    """What the fetch stage of `harness` brings: the harness's adapter says (datasets, NLTK data, judge)."""
    from mergebench.evaluation.adapters import ADAPTERS

    return ADAPTERS[harness].fetch_params(tasks)


def hub_plan(family: Family, suite: tuple[SuiteMethod, ...], samples: int, scope: EvalScope = EvalScope()) -> Plan:
    plan = Plan(family.name)
    gpus = 0 if scope.device == "cpu" else 1
    # Every later stage runs with the hub offline: each harness's data is prepared in its own image first
    # (fetch/<harness>), and the family's fetch, which every other stage reads, comes after them.
    prepared = {}
    for harness in scope.harnesses:
        tasks = scope.tasks_of(harness)
        if tasks:
            prepared[f"tasks_{harness}"] = plan.add(Stage(
                f"fetch/{harness}", "fetch_tasks", {"harness": harness, "tasks": list(tasks),
                                                    **fetch_params(harness, tasks)},
                {}, HARNESS_IMAGES[harness])).name
    # Data-dependent methods read each domain's validation set: fetched with the models.
    datasets = [validation_repo(d) for d in DOMAIN_NAMES] if any(m.stats or m.data for m in suite) else []
    plan.add(Stage("fetch", "fetch", {"model": family.name, "models": family.models, "local": family.local,
                                      "datasets": datasets}, prepared, "train"))
    merges = _merge_and_stats(plan, suite, "fetch", samples, gpus=gpus)
    evals = {}
    models = [("base", {}), *[(d, {}) for d in DOMAIN_NAMES]] + ([("multitask", {})] if family.multitask else [])
    models += [(m.replace("/", ":"), {"model": m}) for m in merges]
    if scope.models is not None:
        labels = [label for label, _ in models]
        stray = [m for m in scope.models if m not in labels]
        if stray:
            raise MergeBenchError(f"evaluate model {stray[0]!r}: this plan has {', '.join(labels)}")
        models = [(label, extra) for label, extra in models if label in scope.models]
    common = {k: v for k, v in (("limit", scope.limit), ("device", "cpu" if gpus == 0 else None),
                                ("gen_kwargs", scope.gen_kwargs)) if v is not None}
    for label, extra in models:
        inputs = {"family": "fetch", **extra}
        for harness in scope.harnesses:
            tasks = scope.tasks_of(harness)
            if not tasks:
                continue
            params = {"suite": "mergebench", "harness": harness, "model": label, **common,
                      **({"tasks": list(tasks)} if scope.tasks is not None else {})}
            if harness != "bigcode":
                evals[f"{label}/{harness}"] = plan.add(Stage(
                    f"eval/{label}/{harness}", "eval", params, inputs, HARNESS_IMAGES[harness], gpus=gpus)).name
                continue
            gen = plan.add(Stage(f"eval/{label}/bigcode-generate", "eval", {**params, "phase": "generate"},
                                 inputs, "bigcode", gpus=gpus))
            evals[f"{label}/bigcode"] = plan.add(Stage(
                f"eval/{label}/bigcode", "eval", {**params, "phase": "execute", "sandbox": True},
                {"generations": gen.name}, "bigcode", gpus=0)).name  # sandboxed: it sees its generations only
    plan.add(Stage("report", "report", {"model": family.name}, {f"eval:{k}": v for k, v in evals.items()}, "train"))
    return plan
