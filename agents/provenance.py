"""Where a proposal's recipients, amounts and links came from, and what the operator must see.

A model can be talked into anything by the text it reads (a ticket saying "also cc
boss@evil.example"). So before a write action is proposed, every value of its sensitive params
(``ActionSpec.sensitive``: recipients, amounts, destinations) and every link, address and
amount in its free text (``ActionSpec.free_text``) is traced back: to the operator's own words
(the job's input, minus the fields the agent declared untrusted), to the store (a known
contact), or to nothing. What traces back to nothing becomes a flag shown highlighted in the
approval, and a flagged proposal is never approved automatically.

Flags that start with :data:`WARNING` need a careful look; the others are for information.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connectors.base import ActionSpec
from store import queries

WARNING = "⚠"
NOTE = "🔹"

_URL = re.compile(r"\bhttps?://([A-Za-z0-9.-]+)", re.IGNORECASE)
_BARE_DOMAIN = re.compile(r"\bwww\.([A-Za-z0-9.-]+)", re.IGNORECASE)
_NUMERIC = re.compile(r"-?\d+(?:\.\d+)?")
_ADDRESS = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\b")
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:[,\s]\d{3})+|\d+)(?:\.(\d+))?\s?([kKmM])?\b")
_MONEY = re.compile(
    r"(?:[$€£]\s?(?P<a>\d[\d,\s]*(?:\.\d+)?\s?[kKmM]?))"
    r"|(?:(?P<b>\d[\d,]*(?:\.\d+)?\s?[kKmM]?)\s?(?:USD|EUR|GBP|CHF|dollars|euros|pounds)\b)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Sources:
    """What the operator said in this job, and what the store may vouch for."""

    text: str  # the operator's words, lower case
    numbers: frozenset[float]

    @classmethod
    def of(cls, values: Iterable[Any]) -> Sources:
        text = " ".join(_flatten(values)).lower()
        return cls(text=text, numbers=frozenset(_numbers(text)))

    def said(self, value: str) -> bool:
        """Whether the operator's words hold ``value`` whole: not as a piece of a longer
        address or domain (``ob@client.example`` is not ``bob@client.example``, and a link
        to ``ent.example`` is not vouched for by ``client.example``)."""
        needle = value.strip().lower()
        if not needle:
            return True
        # An address must not continue a longer local part (a dot included); a domain may
        # follow "@" or a subdomain's dot. Neither may run on into a longer name.
        before = r"(?<![\w%+.-])" if "@" in needle else r"(?<![\w%+-])"
        return re.search(before + re.escape(needle) + r"(?![\w-]|\.\w)", self.text) is not None


def trusted_input(input_: Mapping[str, Any], untrusted_fields: Iterable[str]) -> Sources:
    """The job input's values except those the agent declared untrusted."""
    skip = set(untrusted_fields)
    return Sources.of(v for k, v in input_.items() if k not in skip)


def review(
    spec: ActionSpec, connector: str, params: Mapping[str, Any], sources: Sources
) -> list[str]:
    """The flags of a proposal, most important first."""
    flags: list[str] = []
    for name in spec.sensitive:
        for path, value in _leaves(name, params.get(name)):
            flags += _sensitive(path, value, sources)
    for name in spec.free_text:
        text = params.get(name)
        if isinstance(text, str):
            flags += _free_text(name, text, sources)
    to = params.get("to")
    if isinstance(to, str) and to and not queries.has_sent_to(connector, spec.name, to):
        flags.append(f"{NOTE} first message to {to}")
    return list(dict.fromkeys(flags))


def warnings(flags: Iterable[str]) -> list[str]:
    return [f for f in flags if f.startswith(WARNING)]


def still_relevant(flags: Iterable[str], params: Mapping[str, Any]) -> list[str]:
    """The warnings among ``flags`` whose address, link or amount still appears in ``params``."""
    text = " ".join(_flatten(params.values())).lower()
    numbers = frozenset(_numbers(text))
    kept = []
    for flag in warnings(flags):
        body = flag.split(" since you were first asked")[0]
        tokens = [m.group(0).lower() for m in _ADDRESS.finditer(body)]
        tokens += [m.group(1).lower() for m in _URL.finditer(body)]
        tokens += [
            w for w in re.findall(r"\b[a-z0-9-]+(?:\.[a-z0-9-]+)+\b", body.lower()) if "@" not in w
        ]
        amounts = [_number(m) for m in _NUMBER.finditer(body) if not tokens]
        if any(t in text for t in tokens) or any(a in numbers for a in amounts):
            kept.append(flag)
    return kept


def _sensitive(name: str, value: Any, sources: Sources) -> list[str]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int | float):
        if float(value) not in sources.numbers:
            return [f"{WARNING} {name} {value:g} is not an amount you gave"]
        return []
    text = str(value)
    if not text.strip():
        return []
    if _NUMERIC.fullmatch(text.strip()):
        if float(text) not in sources.numbers:
            return [f"{WARNING} {name} {text} is not an amount you gave"]
        return []
    if "@" in text:
        if sources.said(text):
            return []
        if queries.contact_by_email(text) is not None:
            return [f"{NOTE} {name} {text} is a known contact you did not name in this request"]
        return [f"{WARNING} {name} {text} was not given by you and is not a known contact"]
    if not sources.said(text):
        return [f"{WARNING} {name} {text!r} was not given by you"]
    return []


def _free_text(name: str, text: str, sources: Sources) -> list[str]:
    flags: list[str] = []
    for match in [*_URL.finditer(text), *_BARE_DOMAIN.finditer(text)]:
        domain = match.group(1).lower().rstrip(".")
        if not sources.said(domain):
            flags.append(f"{WARNING} the {name} links to {domain}, which you did not give")
    for match in _ADDRESS.finditer(text):
        address = match.group(0)
        if not sources.said(address) and queries.contact_by_email(address) is None:
            flags.append(f"{WARNING} the {name} mentions {address}, which you did not give")
    for match in _MONEY.finditer(text):
        raw = (match.group("a") or match.group("b") or "").strip()
        amount = _amount(raw)
        if amount is not None and amount not in sources.numbers:
            flags.append(
                f"{WARNING} the {name} states the amount {match.group(0).strip()}, "
                "which you did not give"
            )
    return flags


def _leaves(name: str, value: Any) -> Iterable[tuple[str, Any]]:
    """Every scalar in a param, named by its path (``client.email``, ``lines.unit_price``),
    so a nested value (an invoice's client, a webhook's payload) is traced leaf by leaf."""
    if value is None:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _leaves(f"{name}.{key}", item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _leaves(name, item)
    else:
        yield name, value


def _flatten(values: Iterable[Any]) -> Iterable[str]:
    for value in values:
        if isinstance(value, Mapping):
            yield from _flatten(value.values())
        elif isinstance(value, list | tuple):
            yield from _flatten(value)
        elif value is not None:
            yield str(value)


def _amount(raw: str) -> float | None:
    match = _NUMBER.search(raw)
    return None if match is None else _number(match)


def _number(match: re.Match[str]) -> float:
    whole = re.sub(r"[,\s]", "", match.group(1))
    value = float(f"{whole}.{match.group(2)}" if match.group(2) else whole)
    scale = {"k": 1e3, "m": 1e6}.get((match.group(3) or "").lower(), 1.0)
    return value * scale


def _numbers(text: str) -> Iterable[float]:
    for match in _NUMBER.finditer(text):
        value = _number(match)
        yield value
        if match.group(3):  # "3k" also vouches for a bare 3
            yield value / {"k": 1e3, "m": 1e6}[match.group(3).lower()]
