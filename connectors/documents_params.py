"""The documents connector's action parameters and the validators of their text fields."""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from decimal import Decimal
from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from connectors.invoice import (
    CurrencyCode,
    InvoiceLine,
    InvoiceNumber,
    Party,
    TaxRate,
    Text,
    check_dates,
)

_MARKER = re.compile(r"<!--\s*/?\s*opcore:", re.IGNORECASE)
_ENTRY_ID = re.compile(r"urn:opcore:(?P<hash>[0-9a-f]{32})")


def _no_markers(value: str) -> str:
    if _MARKER.search(value):
        raise ValueError("may not contain opcore's own '<!-- opcore:' markers")
    return value


def _xml_text(value: str) -> str:
    if any(c not in "\t\n\r" and unicodedata.category(c) in ("Cc", "Cs") for c in value):
        raise ValueError("may not contain control characters")
    if "\ufffe" in value or "\uffff" in value:
        raise ValueError("may not contain non-characters")
    return value


def _one_line(value: str) -> str:
    if "\n" in value or "\t" in value:
        raise ValueError("must be one line")
    return value


def _check_link(value: str) -> str:
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() for c in value)
    ):
        raise ValueError("a link is an absolute http:// or https:// URL without spaces")
    return value


# --- params -----------------------------------------------------------------------------


class PublishInvoice(BaseModel):
    """Parameters of ``publish_invoice``: an :class:`Invoice`, whose seller may come from
    the connector's configuration instead."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    number: InvoiceNumber
    issue_date: date
    due_date: date
    seller: Party | None = None
    client: Party
    lines: Annotated[list[InvoiceLine], Field(min_length=1, max_length=100)]
    currency: CurrencyCode
    tax_rate: TaxRate = Decimal(0)
    notes: Annotated[Text, Field(max_length=2000)] = ""

    @model_validator(mode="after")
    def _due_after_issue(self) -> Self:
        check_dates(self.issue_date, self.due_date)
        return self


class VoidInvoice(BaseModel):
    """Parameters of ``void_invoice``. As the compensation of ``publish_invoice`` it gets
    that action's params and result too: only ``number`` (and ``reason``) are read."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    number: InvoiceNumber
    reason: Annotated[Text, Field(max_length=300)] = ""


class AppendChangelog(BaseModel):
    """Parameters of ``append_changelog``: one release's section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$")]
    date: date
    body: Annotated[
        str,
        Field(min_length=1, max_length=20_000),
        AfterValidator(_xml_text),
        AfterValidator(_no_markers),
    ]


class RemoveChangelogEntry(BaseModel):
    """Parameters of ``remove_changelog_entry``: the ``entry`` an append reported (as the
    compensation it also gets the append's params, which are ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    entry: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


class PublishPost(BaseModel):
    """Parameters of ``publish_post``: a feed entry and its Markdown page."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: Annotated[
        str,
        Field(min_length=1, max_length=200),
        AfterValidator(_xml_text),
        AfterValidator(_one_line),
    ]
    body: Annotated[str, Field(min_length=1, max_length=50_000), AfterValidator(_xml_text)]
    link: Annotated[str, Field(max_length=2000), AfterValidator(_check_link)] | None = None
    summary: Annotated[str, Field(max_length=500), AfterValidator(_xml_text)] | None = None


class UnpublishPost(BaseModel):
    """Parameters of ``unpublish_post``: the entry ``id`` a publish reported."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: Annotated[str, Field(pattern=_ENTRY_ID.pattern)]
