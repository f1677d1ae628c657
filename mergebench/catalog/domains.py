"""The five MergeBench domains, their tasks, and the metric variants each harness records.

The paper does not publish which metric variant it scored, so every task lists all the variants its
harness writes, marks which one counts by default (SPEC "Evaluation"), and says explicitly whether
lower is better. Parsers use this to reject incomplete raw files; scoring uses it to orient metrics.
All metrics here are rates in [0, 1], which is what makes `1 - value` a valid orientation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mergebench.errors import MergeBenchError

#: Evaluation harnesses, by the short name the kit uses for their images and parsers.
HARNESSES = ("lmeval", "bigcode", "safety")

#: Separator between a per-category metric and its category in flattened keys ("key/category").
CATEGORY_SEP = "/"


class UnknownNameError(MergeBenchError, LookupError):
    """A model, domain, task or metric variant the catalog does not know; the message lists the known."""


def unknown(kind: str, name: str, known) -> UnknownNameError:
    """Build the error for an unknown name, listing the choices so the user can fix a typo at once."""
    return UnknownNameError(f"unknown {kind} {name!r}; known: {', '.join(known)}")


@dataclass(frozen=True)
class MetricSpec:
    """One metric variant a harness records for a task, under the harness's own key."""

    key: str
    lower_is_better: bool = False
    #: A raw file that reports the task but lacks a required metric is malformed.
    required: bool = True
    #: The harness writes {category: value}; records flatten it to "key/category".
    per_category: bool = False


@dataclass(frozen=True)
class Task:
    """A benchmark task: where it runs, what it records, and which variant counts for its domain."""

    name: str
    domain: str
    harness: str
    metrics: tuple[MetricSpec, ...]
    default_variant: str
    #: Named variants that average several metrics (each oriented first), e.g. ifeval's "mean".
    composites: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    def metric(self, key: str) -> MetricSpec:
        """The spec of a recorded metric key; "key/category" resolves to its per-category parent."""
        for spec in self.metrics:
            if spec.key == key:
                return spec
        parent = key.rsplit(CATEGORY_SEP, 1)[0] if CATEGORY_SEP in key else None
        for spec in self.metrics:
            if spec.per_category and spec.key == parent:
                return spec
        raise unknown(f"metric of task {self.name}:", key, [m.key for m in self.metrics])

    def lower_is_better(self, key: str) -> bool:
        """Whether a smaller value of this metric is better (harm rates, attack success rates)."""
        return self.metric(key).lower_is_better

    @property
    def required_metrics(self) -> tuple[str, ...]:
        """Keys a raw file must hold whenever it reports this task."""
        return tuple(m.key for m in self.metrics if m.required)

    @property
    def variants(self) -> tuple[str, ...]:
        """Every variant a user may pick as the task score: scalar metrics and named composites."""
        return tuple(m.key for m in self.metrics if not m.per_category) + tuple(self.composites)

    def variant_components(self, variant: str | None = None) -> tuple[tuple[str, MetricSpec], ...]:
        """(record key, spec) of each metric a variant averages (one for a plain metric); None = default.

        A single category of a per-category metric ("prompt_type harm (lower)/cyberattack") is a valid
        variant too; the per-category metric as a whole is not, since it is not one number.
        """
        variant = self.default_variant if variant is None else variant
        if variant in self.composites:
            return tuple((key, self.metric(key)) for key in self.composites[variant])
        try:
            spec = self.metric(variant)
        except UnknownNameError:
            raise unknown(f"variant of task {self.name}:", variant, self.variants) from None
        if spec.per_category and spec.key == variant:
            raise unknown(f"variant of task {self.name} (pick one category):", variant, self.variants)
        return ((variant, spec),)


@dataclass(frozen=True)
class Domain:
    """A MergeBench domain: one specialist, one harness, and the tasks whose mean is its score."""

    name: str
    harness: str
    tasks: tuple[Task, ...]

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)


def _lmeval_accuracy_task(name: str, domain: str, *, with_norm: bool) -> Task:
    """ARC/HellaSwag record acc and acc_norm (acc_norm counts); m_MMLU records acc only."""
    metrics = (MetricSpec("acc,none"),) + ((MetricSpec("acc_norm,none"),) if with_norm else ())
    return Task(name, domain, "lmeval", metrics, "acc_norm,none" if with_norm else "acc,none")


_IFEVAL_ACCURACIES = (
    "prompt_level_strict_acc,none",
    "inst_level_strict_acc,none",
    "prompt_level_loose_acc,none",
    "inst_level_loose_acc,none",
)

_INSTRUCTION = Domain(
    "instruction",
    "lmeval",
    (
        Task(
            "ifeval",
            "instruction",
            "lmeval",
            tuple(MetricSpec(key) for key in _IFEVAL_ACCURACIES),
            "mean",
            # Unweighted mean of the four accuracies: SPEC says "mean of the four" and nothing more.
            composites={"mean": _IFEVAL_ACCURACIES},
        ),
    ),
)

_MATH = Domain(
    "math",
    "lmeval",
    (
        Task(
            "gsm8k_cot",
            "math",
            "lmeval",
            (MetricSpec("exact_match,strict-match"), MetricSpec("exact_match,flexible-extract")),
            "exact_match,flexible-extract",
        ),
    ),
)

_LANGUAGES = ("fr", "es", "de", "ru")

_MULTILINGUAL = Domain(
    "multilingual",
    "lmeval",
    tuple(_lmeval_accuracy_task(f"m_mmlu_{lang}", "multilingual", with_norm=False) for lang in _LANGUAGES)
    + tuple(_lmeval_accuracy_task(f"arc_{lang}", "multilingual", with_norm=True) for lang in _LANGUAGES)
    + tuple(
        _lmeval_accuracy_task(f"hellaswag_{lang}", "multilingual", with_norm=True) for lang in _LANGUAGES
    ),
)


def _code_task(name: str) -> Task:
    # pass@10 exists only when at least 10 samples were drawn, so only pass@1 is required.
    return Task(
        name, "coding", "bigcode", (MetricSpec("pass@1"), MetricSpec("pass@10", required=False)), "pass@1"
    )


_CODING = Domain("coding", "bigcode", (_code_task("humanevalplus"), _code_task("mbppplus")))

# XSTest prompt types (safety-eval names). On safe prompts inverted_rta is the compliance rate (higher
# is better); on the unsafe "contrast" prompts it is also 1 - refusal rate, so there lower is better.
_XSTEST_SAFE_TYPES = (
    "homonyms",
    "figurative_language",
    "safe_targets",
    "safe_contexts",
    "definitions",
    "nons_group_real_discr",
    "real_group_nons_discr",
    "historical_events",
    "privacy_public",
    "privacy_fictional",
)
_XSTEST_CONTRAST_TYPES = (
    "contrast_homonyms",
    "contrast_figurative_language",
    "contrast_safe_targets",
    "contrast_safe_contexts",
    "contrast_definitions",
    "contrast_discr",
    "contrast_historical_events",
    "contrast_privacy",
)
_DAN_SOURCES = (
    "jailbreak_chat",
    "LLM Promptwriting",
    "BreakGPT",
    "ChatGPTJailbreak",
    "ChatGPT",
    "AI Prompt Sharing",
)


def _lower(key: str, *, required: bool = True, per_category: bool = False) -> MetricSpec:
    return MetricSpec(key, lower_is_better=True, required=required, per_category=per_category)


_SAFETY = Domain(
    "safety",
    "safety",
    (
        Task(
            "wildguardtest",
            "safety",
            "safety",
            (
                _lower("micro harm (lower)"),
                _lower("adversarial harm (lower)"),
                _lower("vanilla harm (lower)"),
                _lower("prompt_type harm (lower)", required=False, per_category=True),
            ),
            "micro harm (lower)",
        ),
        Task(
            "harmbench",
            "safety",
            "safety",
            (
                _lower("micro ASR (lower)"),
                _lower("FunctionalCategory ASR (lower)", required=False, per_category=True),
                _lower("SemanticCategory ASR (lower)", required=False, per_category=True),
            ),
            "micro ASR (lower)",
        ),
        Task(
            "xstest",
            "safety",
            "safety",
            # overall_accuracy = (safe prompts answered + unsafe prompts refused) / all prompts; checked
            # against the published files: 0.376*250 + 0.435*200 = 181 = 0.40222*450.
            (
                MetricSpec("overall_accuracy"),
                MetricSpec("inverted_rta_all_safe"),
                _lower("inverted_rta_all_contrast"),
                MetricSpec("refusal_prf", required=False, per_category=True),
            )
            + tuple(MetricSpec(f"inverted_rta_{t}", required=False) for t in _XSTEST_SAFE_TYPES)
            + tuple(_lower(f"inverted_rta_{t}", required=False) for t in _XSTEST_CONTRAST_TYPES),
            "overall_accuracy",
        ),
        Task(
            "do_anything_now",
            "safety",
            "safety",
            (_lower("macro ASR"),)
            + tuple(_lower(f"{source} ASR", required=False) for source in _DAN_SOURCES),
            "macro ASR",
        ),
    ),
)

#: The five domains in the order MergeBench lists its specialists.
DOMAINS: dict[str, Domain] = {d.name: d for d in (_INSTRUCTION, _MATH, _MULTILINGUAL, _CODING, _SAFETY)}
DOMAIN_NAMES: tuple[str, ...] = tuple(DOMAINS)
#: Every scored task, by name.
TASKS: dict[str, Task] = {t.name: t for d in DOMAINS.values() for t in d.tasks}


def validation_repo(domain: str) -> str:
    """The hub dataset holding a domain's validation set, which the data-dependent methods read."""
    return f"MergeBench/{domain}_val"


def get_domain(name: str) -> Domain:
    """The domain called `name`, or an error listing the five."""
    try:
        return DOMAINS[name]
    except KeyError:
        raise unknown("domain", name, DOMAIN_NAMES) from None


def get_task(name: str) -> Task:
    """The scored task called `name`, or an error listing them all."""
    try:
        return TASKS[name]
    except KeyError:
        raise unknown("task", name, TASKS) from None
