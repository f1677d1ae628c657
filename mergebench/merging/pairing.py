"""Which domain's validation data each specialist's statistics are computed on.

Correct pairing (the default): every specialist sees its own domain's data.

`compat="reference"` reproduces the reference code's pairing (SPEC, "Known defects"): it zips the task
data order (math, safety, coding, multilingual, instruction) with the specialist order (instruction,
math, coding, safety, multilingual), so only the coding specialist sees its own data. The mapping is
a fixed permutation of the five domains, so it is the same whichever subset or order of specialists a
merge uses. The reference's Localize-and-Stitch trains each mask on its own domain's data (its task order
matches its specialist order), so mask statistics keep the correct pairing under `compat="reference"`.
"""

from __future__ import annotations

import re
from pathlib import Path

from mergebench.errors import MergeBenchError
from mergebench.merging.datapass.samples import DOMAINS, check_domain

COMPAT_MODES = ("default", "reference")
REFERENCE_SPECIALIST_ORDER = ("instruction", "math", "coding", "safety", "multilingual")
REFERENCE_DATA_ORDER = ("math", "safety", "coding", "multilingual", "instruction")
REFERENCE_PAIRING = dict(zip(REFERENCE_SPECIALIST_ORDER, REFERENCE_DATA_ORDER, strict=True))
assert set(REFERENCE_SPECIALIST_ORDER) == set(DOMAINS) == set(REFERENCE_DATA_ORDER)
#: Statistics kinds whose reference code pairs specialists with mismatched data.
MISPAIRED_IN_REFERENCE = ("gram", "fisher")


def compat_for_stats(kind: str, compat: str) -> str:
    """The pairing mode a statistics pass of `kind` uses under `compat`: the reference reproduces the
    mismatch only where its own code has it (RegMean's Grams, Fisher), not for trained masks."""
    return compat if kind in MISPAIRED_IN_REFERENCE else "default"


def data_domain(specialist_domain: str, compat: str = "default") -> str:
    """The domain whose validation data the statistics of a `specialist_domain` specialist use."""
    check_domain(specialist_domain)
    if compat == "default":
        return specialist_domain
    if compat == "reference":
        return REFERENCE_PAIRING[specialist_domain]
    raise MergeBenchError(f"compatibility mode {compat!r}: expected one of {', '.join(COMPAT_MODES)}")


def pair_data(specialist_domains: list[str], compat: str = "default") -> list[str]:
    """The data domain for each specialist, in the given order."""
    return [data_domain(d, compat) for d in specialist_domains]


def domain_of_model(path: str) -> str | None:
    """A specialist's domain from its name's last `_` or `-` part (`MergeBench/Llama-3.2-3B_math`)."""
    name = str(path).rstrip("/").rsplit("/", 1)[-1]
    tail = re.split(r"[_-]", name)[-1].lower()
    return tail if tail in DOMAINS else None


def resolve_data(data: str, model: str, domain: str | None, compat: str) -> tuple[str, str | None]:
    """(source, data domain) for --data: a domain name or JSONL file is used as given; `mergebench`
    (the hub validation sets) or a directory of <domain>.jsonl files is paired with the specialist's
    domain (--domain, or the `_<domain>` suffix of the model's name) by the pairing rule of --compat."""
    path = Path(data).expanduser()
    if data != "mergebench" and not path.is_dir():
        if data in DOMAINS and not path.exists():
            return data, data
        return data, None
    specialist = domain or domain_of_model(model)
    if specialist is None:
        raise MergeBenchError(f"--data {data}: cannot tell the domain of specialist {model} from its name (no "
                              f"_<domain> suffix); give it with --domain (one of {', '.join(DOMAINS)}) or give "
                              "each specialist's data explicitly")
    chosen = data_domain(specialist, compat)
    return (chosen if data == "mergebench" else data), chosen
