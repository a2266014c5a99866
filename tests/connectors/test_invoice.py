"""Invoices: arithmetic in Decimal cents, an escaped HTML page, a deterministic Unicode PDF."""

from __future__ import annotations

import io
from datetime import date
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pypdf
import pytest
from pydantic import ValidationError

from connectors.invoice import (
    Invoice,
    Party,
    find_unicode_font,
    format_money,
    invoice_from_html,
    render_html,
    render_pdf,
    to_charset,
)

SELLER = Party(
    name="Zoë Müller",
    email="zoe@example.com",
    company="Müller Design",
    address="Hauptstraße 1\n10115 Berlin",
)
CLIENT = Party(name="Ana Ćorić", email="ana@example.org", company="Acme & Co")


def make_invoice(**changes: Any) -> Invoice:
    fields: dict[str, Any] = {
        "number": "2026-0007",
        "issue_date": date(2026, 3, 1),
        "due_date": date(2026, 3, 31),
        "seller": SELLER,
        "client": CLIENT,
        "lines": [
            {"description": "Design work", "quantity": "12.5", "unit_price": "85"},
            {"description": "Hosting", "quantity": "1", "unit_price": "19.99"},
        ],
        "currency": "EUR",
        "tax_rate": "0.19",
    }
    return Invoice.model_validate({**fields, **changes})


def pdf_text(data: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


# --- arithmetic ---------------------------------------------------------------------------


def test_totals_round_each_line_and_the_tax_half_up_to_cents() -> None:
    inv = make_invoice(
        lines=[
            {"description": "a", "quantity": "3", "unit_price": "0.335"},  # 1.005 -> 1.01
            {"description": "b", "quantity": "1", "unit_price": "0.125"},  # 0.125 -> 0.13
            {"description": "c", "quantity": "2", "unit_price": "4.4525"},  # 8.905 -> 8.91
        ],
        tax_rate="0.19",
    )
    assert [inv.line_total(line) for line in inv.lines] == [
        Decimal("1.01"),
        Decimal("0.13"),
        Decimal("8.91"),
    ]
    assert inv.subtotal == Decimal("10.05")
    assert inv.tax == Decimal("1.91")  # 1.9095
    assert inv.total == Decimal("11.96")
    assert all(isinstance(x, Decimal) for x in (inv.subtotal, inv.tax, inv.total))
    assert str(inv.total) == "11.96"


def test_a_half_cent_of_tax_rounds_up_not_to_even() -> None:
    inv = make_invoice(
        lines=[{"description": "x", "quantity": "1", "unit_price": "0.50"}], tax_rate="0.05"
    )
    assert inv.tax == Decimal("0.03")  # 0.025: half-even would give 0.02


def test_no_tax_by_default_and_a_hundred_lines_add_up_exactly() -> None:
    lines = [
        {"description": f"item {n}", "quantity": "3", "unit_price": "0.333"} for n in range(100)
    ]
    inv = Invoice.model_validate(make_invoice(lines=lines).model_dump(exclude={"tax_rate"}))
    assert inv.tax_rate == 0 and inv.tax == Decimal("0.00")
    assert inv.subtotal == inv.total == Decimal("100.00")  # 0.999 -> 1.00, a hundred times


@pytest.mark.parametrize(
    "change",
    [
        {"lines": []},
        {"lines": [{"description": "x", "quantity": "1", "unit_price": "1"}] * 101},
        {"lines": [{"description": "x", "quantity": "0", "unit_price": "1"}]},
        {"lines": [{"description": "x", "quantity": "1", "unit_price": "-1"}]},
        {"lines": [{"description": "x" * 301, "quantity": "1", "unit_price": "1"}]},
        {"lines": [{"description": "x\ny", "quantity": "1", "unit_price": "1"}]},
        {"lines": [{"description": "x", "quantity": "NaN", "unit_price": "1"}]},
        {"tax_rate": "1"},
        {"tax_rate": "-0.1"},
        {"currency": "eur"},
        {"currency": "EURO"},
        {"due_date": date(2026, 2, 28)},
        {"number": "../2026-0007"},
        {"number": "2026 0007"},
        {"client": {"name": "Ana", "email": "not an address"}},
    ],
)
def test_an_invalid_invoice_is_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        make_invoice(**change)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        ("1234.5", "EUR 1,234.50"),
        ("0", "EUR 0.00"),
        ("0.005", "EUR 0.01"),
        ("1000000", "EUR 1,000,000.00"),
        ("999.995", "EUR 1,000.00"),
    ],
)
def test_money_is_formatted_with_the_code_thousands_and_cents(amount: str, text: str) -> None:
    assert format_money(Decimal(amount), "EUR") == text


# --- HTML ---------------------------------------------------------------------------------


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_every_value_in_the_page_is_escaped() -> None:
    evil = "<script>alert('x')</script>"
    inv = make_invoice(
        client={"name": evil, "email": "ana@example.org", "company": 'Acme "&" Co'},
        lines=[{"description": f"</script>{evil}", "quantity": "1", "unit_price": "5"}],
        notes="<img src=x onerror=alert(1)>",
    )
    page = render_html(inv)
    assert "<script>alert" not in page
    assert "<img" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "Acme &quot;&amp;&quot; Co" in page
    parser = _Tags()
    parser.feed(page)
    # The one script element is the inert JSON copy of the invoice.
    assert parser.scripts == [{"type": "application/json", "id": "opcore-invoice"}]
    assert invoice_from_html(page) == inv


def test_the_page_is_self_contained_and_shows_the_figures() -> None:
    page = render_html(make_invoice())
    assert page.startswith("<!DOCTYPE html>")
    assert "<style>" in page and "@media print" in page
    assert "http://" not in page and "https://" not in page and "src=" not in page
    for text in ("2026-0007", "Zoë Müller", "Ana Ćorić", "EUR 1,082.49", "Tax (19%)"):
        assert text in page
    assert "EUR 1,288.16" in page  # 1,082.49 + 205.67
    assert "VOID" not in page
    assert "Void: this invoice is cancelled" in render_html(make_invoice(), void=True)


def test_a_page_without_the_json_copy_has_no_invoice() -> None:
    assert invoice_from_html("<html><body>Invoice</body></html>") is None


# --- PDF ----------------------------------------------------------------------------------


def test_the_pdf_is_a_real_pdf_with_the_invoice_in_it() -> None:
    data = render_pdf(make_invoice())
    assert data.startswith(b"%PDF-")
    assert data.rstrip().endswith(b"%%EOF")
    reader = pypdf.PdfReader(io.BytesIO(data))
    assert reader.metadata is not None
    assert reader.metadata.creation_date is not None
    assert reader.metadata.creation_date.date() == date(2026, 3, 1)
    assert reader.metadata.title == "Invoice 2026-0007"
    text = pdf_text(data)
    for fact in ("2026-0007", "EUR 1,062.50", "EUR 19.99", "Tax (19%)", "EUR 1,288.16"):
        assert fact in text


def test_rendering_twice_gives_the_same_bytes_and_other_content_other_bytes() -> None:
    first = render_pdf(make_invoice())
    assert render_pdf(make_invoice()) == first
    assert render_pdf(make_invoice(notes="Thanks")) != first
    assert render_pdf(make_invoice(), void=True) != first


@pytest.mark.parametrize("font", ["auto", "core"])
def test_unicode_names_survive_in_the_pdf(font: Any) -> None:
    text = pdf_text(render_pdf(make_invoice(), font=font))
    assert "Zoë Müller" in text
    assert "Hauptstraße 1" in text


def test_an_embedded_truetype_font_draws_letters_the_core_fonts_cannot() -> None:
    fonts = find_unicode_font()
    if fonts is None:
        pytest.skip("no DejaVu Sans on this machine (apt-get install fonts-dejavu-core)")
    data = render_pdf(make_invoice(), font=fonts[0])
    assert b"/FontFile2" in data  # the font is embedded (a subset)
    assert "Ana Ćorić" in pdf_text(data)
    assert "Ana Coric" in pdf_text(render_pdf(make_invoice(), font="core"))


def test_characters_no_font_can_draw_are_replaced_deterministically() -> None:
    assert to_charset("Zoë Ćorić € — 日本", None) == "Zoë Coric € — ??"
    dejavu = frozenset(range(0x20, 0x250))  # Latin only
    assert to_charset("Ćorić 日本\n✓", dejavu) == "Ćorić ??\n?"
    inv = make_invoice(notes="日本語 ✓ Ğ")
    assert render_pdf(inv, font="core") == render_pdf(inv, font="core")
    assert "??? ? G" in pdf_text(render_pdf(inv, font="core"))


def test_an_explicit_font_path_that_does_not_exist_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        render_pdf(make_invoice(), font=tmp_path / "missing.ttf")
