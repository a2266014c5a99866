"""Invoices: the model, its arithmetic, and two renderings (a printable HTML page and a PDF).

Money is :class:`~decimal.Decimal` throughout: each line total is rounded half-up to cents,
the subtotal is their sum, the tax is the subtotal times the rate rounded half-up to cents,
and the total is subtotal plus tax. Nothing here touches the file system except reading a
font; :mod:`connectors.documents` decides where the renderings go.

:func:`render_pdf` is deterministic: the same invoice gives the same bytes (the PDF's dates
come from the issue date), so writing it again is a no-op. Text is drawn with an embedded
Unicode TrueType font (DejaVu Sans, when the machine has it) or else with the PDF core font
Helvetica, in which case characters outside Windows-1252 are replaced deterministically
(accents dropped where that leaves a letter, ``?`` otherwise).
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self

from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from fpdf.fonts import FontFace
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from connectors.email import is_sendable_address

CENT = Decimal("0.01")
MAX_LINES = 100

# Where the common Linux distributions and macOS keep DejaVu Sans (regular, bold).
_FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),  # Debian, Ubuntu
    Path("/usr/share/fonts/dejavu-sans-fonts"),  # Fedora
    Path("/usr/share/fonts/dejavu"),
    Path("/usr/share/fonts/TTF"),  # Arch
    Path("/usr/local/share/fonts"),
    Path("/Library/Fonts"),
)
_DATA_MARKER = '<script type="application/json" id="opcore-invoice">'
_DATA = re.compile(re.escape(_DATA_MARKER) + r"(?P<json>.*?)</script>", re.DOTALL)


def _single_line(value: str) -> str:
    if any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in value):
        raise ValueError("must be one line without control characters")
    return value


def _multi_line(value: str) -> str:
    if any(c != "\n" and unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in value):
        raise ValueError("may not contain control characters other than line breaks")
    return value


def _email(value: str) -> str:
    if not is_sendable_address(value):
        raise ValueError("expected one plain address like name@example.com")
    return value


def _check_number(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9])?", value):
        raise ValueError(
            "an invoice number is 1-64 letters, digits, '-' or '_' (like 2026-0007), "
            "starting and ending with a letter or digit"
        )
    return value


Line = Annotated[str, AfterValidator(_single_line)]
Text = Annotated[str, AfterValidator(_multi_line)]
InvoiceNumber = Annotated[str, AfterValidator(_check_number)]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
TaxRate = Annotated[Decimal, Field(ge=0, lt=1, max_digits=6, decimal_places=4)]


class InvoiceLine(BaseModel):
    """One billed item: ``quantity`` times ``unit_price``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: Annotated[Line, Field(min_length=1, max_length=300)]
    quantity: Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=4)]
    unit_price: Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=4)]


class Party(BaseModel):
    """A seller or a client."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[Line, Field(min_length=1, max_length=200)]
    email: Annotated[str, AfterValidator(_email)]
    company: Annotated[Line, Field(max_length=200)] = ""
    address: Annotated[Text, Field(max_length=500)] = ""


def check_dates(issue_date: date, due_date: date) -> None:
    """Raise :class:`ValueError` when the invoice would be due before it was issued."""
    if due_date < issue_date:
        raise ValueError(f"due_date {due_date} is before issue_date {issue_date}")


class Invoice(BaseModel):
    """An invoice. ``subtotal``, ``tax`` and ``total`` are computed, in cents, half-up."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    number: InvoiceNumber
    issue_date: date
    due_date: date
    seller: Party
    client: Party
    lines: Annotated[list[InvoiceLine], Field(min_length=1, max_length=MAX_LINES)]
    currency: CurrencyCode
    tax_rate: TaxRate = Decimal(0)
    notes: Annotated[Text, Field(max_length=2000)] = ""

    @model_validator(mode="after")
    def _due_after_issue(self) -> Self:
        check_dates(self.issue_date, self.due_date)
        return self

    @staticmethod
    def line_total(line: InvoiceLine) -> Decimal:
        return cents(line.quantity * line.unit_price)

    @property
    def subtotal(self) -> Decimal:
        return sum((self.line_total(line) for line in self.lines), Decimal("0.00"))

    @property
    def tax(self) -> Decimal:
        return cents(self.subtotal * self.tax_rate)

    @property
    def total(self) -> Decimal:
        return self.subtotal + self.tax


def cents(amount: Decimal) -> Decimal:
    """``amount`` rounded half-up to cents."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def format_money(amount: Decimal, currency: str) -> str:
    """``EUR 1,234.50``: the ISO code, thousands separated by commas, two decimals."""
    return f"{currency} {cents(amount):,.2f}"


def _plain(number: Decimal) -> str:
    """A quantity or rate without exponent or trailing zeros: ``2``, ``1.5``, ``0.25``."""
    text = f"{number:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _percent(rate: Decimal) -> str:
    return f"{_plain(rate * 100)}%"


def invoice_json(inv: Invoice) -> str:
    """The invoice as canonical JSON (sorted keys, amounts as strings)."""
    return json.dumps(
        inv.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def invoice_from_html(page: str) -> Invoice | None:
    """The invoice embedded in a page made by :func:`render_html`; ``None`` if it has none.

    Raises :class:`ValueError` (pydantic's ``ValidationError`` included) when the embedded
    copy is not a valid invoice."""
    match = _DATA.search(page)
    if match is None:
        return None
    return Invoice.model_validate_json(match["json"])


# --- HTML -------------------------------------------------------------------------------

_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f3f4f6;color:#111827;font:14px/1.45 "DejaVu Sans",Helvetica,Arial,sans-serif}
.page{max-width:210mm;margin:24px auto;background:#fff;padding:18mm 20mm;box-shadow:0 1px 4px rgba(0,0,0,.12)}
header{display:flex;justify-content:space-between;gap:24px;align-items:flex-start}
h1{font-size:28px;letter-spacing:.04em;margin:0 0 8px;text-transform:uppercase}
.muted{color:#6b7280}
.pre{white-space:pre-line}
dl{display:grid;grid-template-columns:auto auto;gap:2px 12px;margin:0}
dt{color:#6b7280}dd{margin:0;text-align:right}
.parties{display:flex;gap:24px;margin:28px 0}
.parties section{flex:1}
h2{font-size:11px;text-transform:uppercase;letter-spacing:.08em;color:#6b7280;margin:0 0 4px}
table{width:100%;border-collapse:collapse;margin-top:8px}
th,td{padding:6px 8px;border-bottom:1px solid #e5e7eb;vertical-align:top}
th{font-size:11px;text-transform:uppercase;letter-spacing:.06em;color:#6b7280;text-align:left}
.num{text-align:right;white-space:nowrap}
tfoot td{border-bottom:none}
tfoot tr.total td{font-weight:bold;font-size:16px;border-top:2px solid #111827}
.notes{margin-top:28px}
.void{border:3px solid #b91c1c;color:#b91c1c;padding:10px 14px;margin-bottom:20px;font-weight:bold;font-size:18px;text-align:center;text-transform:uppercase;letter-spacing:.1em}
.void small{display:block;font-size:12px;text-transform:none;letter-spacing:0;font-weight:normal}
@media print{body{background:#fff}.page{margin:0;box-shadow:none;padding:0;max-width:none}@page{size:A4;margin:18mm 20mm}}
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _party_html(title: str, party: Party) -> str:
    rows = [f"<h2>{_e(title)}</h2>", f"<strong>{_e(party.name)}</strong>"]
    if party.company:
        rows.append(f"<div>{_e(party.company)}</div>")
    if party.address:
        rows.append(f'<div class="pre">{_e(party.address)}</div>')
    rows.append(f'<div class="muted">{_e(party.email)}</div>')
    return "<section>" + "".join(rows) + "</section>"


def render_html(inv: Invoice, *, void: bool = False, void_reason: str = "") -> str:
    """A self-contained, printable page (inline CSS, no scripts, every value escaped).

    The page carries the invoice as JSON (a non-executable ``application/json`` block) so that
    :func:`invoice_from_html` can read it back; ``void`` adds a VOID banner."""
    money = inv.currency
    rows = "".join(
        "<tr>"
        f"<td>{_e(line.description)}</td>"
        f'<td class="num">{_e(_plain(line.quantity))}</td>'
        f'<td class="num">{_e(format_money(line.unit_price, money))}</td>'
        f'<td class="num">{_e(format_money(inv.line_total(line), money))}</td>'
        "</tr>"
        for line in inv.lines
    )
    banner = ""
    if void:
        reason = f"<small>{_e(void_reason)}</small>" if void_reason else ""
        banner = f'<div class="void">Void: this invoice is cancelled{reason}</div>'
    notes = (
        f'<section class="notes"><h2>Notes</h2><div class="pre">{_e(inv.notes)}</div></section>'
        if inv.notes
        else ""
    )
    data = invoice_json(inv).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    title = f"{'VOID ' if void else ''}Invoice {inv.number} — {inv.seller.name}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        '<meta name="generator" content="opcore">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        '<main class="page">\n'
        f"{banner}"
        "<header>"
        f"<div><h1>Invoice</h1>{_party_html('From', inv.seller)}</div>"
        "<dl>"
        f"<dt>Number</dt><dd>{_e(inv.number)}</dd>"
        f"<dt>Issued</dt><dd>{inv.issue_date.isoformat()}</dd>"
        f"<dt>Due</dt><dd>{inv.due_date.isoformat()}</dd>"
        f"<dt>Amount due</dt><dd><strong>{_e(format_money(inv.total, money))}</strong></dd>"
        "</dl></header>\n"
        f'<div class="parties">{_party_html("Bill to", inv.client)}</div>\n'
        "<table><thead><tr><th>Description</th>"
        '<th class="num">Qty</th><th class="num">Unit price</th><th class="num">Amount</th>'
        f"</tr></thead>\n<tbody>{rows}</tbody>\n<tfoot>"
        f'<tr><td colspan="3" class="num">Subtotal</td>'
        f'<td class="num">{_e(format_money(inv.subtotal, money))}</td></tr>'
        f'<tr><td colspan="3" class="num">Tax ({_e(_percent(inv.tax_rate))})</td>'
        f'<td class="num">{_e(format_money(inv.tax, money))}</td></tr>'
        f'<tr class="total"><td colspan="3" class="num">Total</td>'
        f'<td class="num">{_e(format_money(inv.total, money))}</td></tr>'
        "</tfoot></table>\n"
        f"{notes}\n</main>\n"
        f"{_DATA_MARKER}{data}</script>\n"
        "</body>\n</html>\n"
    )


# --- PDF --------------------------------------------------------------------------------


def find_unicode_font() -> tuple[Path, Path | None] | None:
    """DejaVu Sans (regular, bold if present) from the usual font folders, if installed."""
    for folder in _FONT_DIRS:
        regular = folder / "DejaVuSans.ttf"
        if regular.is_file():
            bold = folder / "DejaVuSans-Bold.ttf"
            return regular, bold if bold.is_file() else None
    return None


@lru_cache(maxsize=8)
def _codepoints(path: Path) -> frozenset[int]:
    font = TTFont(str(path), lazy=True)
    try:
        return frozenset(font.getBestCmap())
    finally:
        font.close()


def to_charset(text: str, supported: frozenset[int] | None) -> str:
    """``text`` with every character a font cannot draw replaced, deterministically: its
    compatibility decomposition without accents where that can be drawn, ``?`` otherwise.
    ``supported=None`` means the core fonts' Windows-1252."""

    def ok(c: str) -> bool:
        if supported is not None:
            return ord(c) in supported
        try:
            c.encode("cp1252")
        except UnicodeEncodeError:
            return False
        return True

    out = []
    for c in text:
        if ok(c) or c == "\n":
            out.append(c)
            continue
        simpler = "".join(
            d for d in unicodedata.normalize("NFKD", c) if not unicodedata.combining(d) and ok(d)
        )
        out.append(simpler or "?")
    return "".join(out)


class _Pdf:
    """Drawing helpers over one FPDF document with a regular and a bold face."""

    def __init__(self, font: Path | Literal["auto", "core"], issued: date) -> None:
        self.pdf = FPDF(orientation="portrait", unit="mm", format="A4")
        self.pdf.set_creation_date(datetime.combine(issued, time(0, 0), tzinfo=UTC))
        self.pdf.set_producer("opcore")
        self.pdf.set_creator("opcore")
        self.pdf.set_margins(20, 18, 20)
        self.pdf.set_auto_page_break(auto=True, margin=18)
        fonts = find_unicode_font() if font == "auto" else None
        if isinstance(font, Path):
            fonts = (font, None)
        if fonts is None:
            self.family = "helvetica"
            self.pdf.core_fonts_encoding = "windows-1252"
            self.supported: frozenset[int] | None = None
        else:
            regular, bold = fonts
            self.family = "opcore-sans"
            self.pdf.add_font(self.family, "", regular)
            self.pdf.add_font(self.family, "B", bold or regular)
            self.supported = _codepoints(regular) & _codepoints(bold or regular)

    def t(self, text: str) -> str:
        return to_charset(text, self.supported)

    def font(self, size: float, *, bold: bool = False, gray: bool = False) -> None:
        self.pdf.set_font(self.family, "B" if bold else "", size)
        self.pdf.set_text_color(107, 114, 128) if gray else self.pdf.set_text_color(17, 24, 39)

    def line(self, text: str, *, h: float = 5, width: float = 0, align: str = "L") -> None:
        self.pdf.multi_cell(
            width, h, self.t(text), align=align, new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )

    def party(self, title: str, party: Party, x: float, y: float, width: float) -> float:
        self.pdf.set_xy(x, y)
        self.font(8, bold=True, gray=True)
        self.pdf.multi_cell(width, 5, title.upper(), new_x=XPos.LEFT, new_y=YPos.NEXT)
        self.font(10, bold=True)
        self.pdf.multi_cell(width, 5, self.t(party.name), new_x=XPos.LEFT, new_y=YPos.NEXT)
        self.font(10)
        for text in (party.company, party.address):
            if text:
                self.pdf.multi_cell(width, 5, self.t(text), new_x=XPos.LEFT, new_y=YPos.NEXT)
        self.font(10, gray=True)
        self.pdf.multi_cell(width, 5, self.t(party.email), new_x=XPos.LEFT, new_y=YPos.NEXT)
        return self.pdf.get_y()


def render_pdf(
    inv: Invoice,
    *,
    font: Path | Literal["auto", "core"] = "auto",
    void: bool = False,
    void_reason: str = "",
) -> bytes:
    """An A4 PDF of ``inv``; the same arguments give the same bytes.

    ``font``: ``"auto"`` embeds DejaVu Sans when :func:`find_unicode_font` finds it and falls
    back to Helvetica; a path embeds that TrueType font; ``"core"`` always uses Helvetica."""
    doc = _Pdf(font, inv.issue_date)
    pdf = doc.pdf
    pdf.set_title(doc.t(f"{'VOID ' if void else ''}Invoice {inv.number}"))
    pdf.set_author(doc.t(inv.seller.name))
    pdf.set_lang("en")
    pdf.add_page()
    width = pdf.epw
    money = inv.currency

    if void:
        with pdf.rotation(35, x=pdf.w / 2, y=pdf.h / 2):  # a watermark under the content
            pdf.set_text_color(254, 202, 202)
            pdf.set_font(doc.family, "B", 110)
            pdf.text(pdf.w / 2 - 60, pdf.h / 2 + 15, "VOID")
        pdf.set_draw_color(185, 28, 28)
        pdf.set_line_width(0.8)
        pdf.set_text_color(185, 28, 28)
        pdf.set_font(doc.family, "B", 16)
        text = "VOID: this invoice is cancelled"
        if void_reason:
            text += f"\n{void_reason}"
        pdf.multi_cell(
            width, 8, doc.t(text), border=1, align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
        pdf.set_draw_color(0, 0, 0)
        pdf.set_line_width(0.2)
        pdf.ln(4)

    top = pdf.get_y()
    doc.font(24, bold=True)
    pdf.cell(width / 2, 11, "INVOICE", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    left_end = doc.party("From", inv.seller, pdf.l_margin, pdf.get_y() + 2, width / 2)

    facts = (
        ("Number", inv.number),
        ("Issued", inv.issue_date.isoformat()),
        ("Due", inv.due_date.isoformat()),
        ("Amount due", format_money(inv.total, money)),
    )
    y = top + 2
    for label, value in facts:
        pdf.set_xy(pdf.l_margin + width / 2, y)
        doc.font(10, gray=True)
        pdf.cell(width / 4, 6, label, align="R")
        doc.font(10, bold=label == "Amount due")
        pdf.cell(width / 4, 6, doc.t(value), align="R")
        y += 6
    bottom = doc.party("Bill to", inv.client, pdf.l_margin, max(left_end, y) + 8, width)
    pdf.set_xy(pdf.l_margin, bottom + 8)

    doc.font(10)
    headings = FontFace(emphasis="BOLD", color=(107, 114, 128), fill_color=(243, 244, 246))
    with pdf.table(
        col_widths=(95, 17, 29, 29),
        text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT"),
        borders_layout="HORIZONTAL_LINES",
        headings_style=headings,
        line_height=6,
        padding=(1.5, 1.5),
        width=width,
    ) as table:
        header = table.row()
        for heading in ("Description", "Qty", "Unit price", "Amount"):
            header.cell(heading)
        for item in inv.lines:
            row = table.row()
            row.cell(doc.t(item.description))
            row.cell(_plain(item.quantity))
            row.cell(doc.t(format_money(item.unit_price, money)))
            row.cell(doc.t(format_money(inv.line_total(item), money)))

    pdf.ln(3)
    totals = (
        ("Subtotal", inv.subtotal, False),
        (f"Tax ({_percent(inv.tax_rate)})", inv.tax, False),
        ("Total", inv.total, True),
    )
    for label, amount, strong in totals:
        doc.font(11 if strong else 10, bold=strong)
        pdf.set_x(pdf.l_margin + width - 75)
        pdf.cell(40, 7, label, align="R")
        pdf.cell(35, 7, doc.t(format_money(amount, money)), align="R")
        pdf.ln(7)

    if inv.notes:
        pdf.ln(6)
        doc.font(8, bold=True, gray=True)
        doc.line("NOTES")
        doc.font(10)
        doc.line(inv.notes)
    return bytes(pdf.output())
