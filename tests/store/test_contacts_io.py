"""Contacts in and out of the store as CSV and vCard (store/contacts_io.py)."""

from __future__ import annotations

import codecs

import pytest

from store import Store, queries
from store import events as ev
from store.contacts_io import (
    ContactFileError,
    ContactRecord,
    ImportSummary,
    RowError,
    contact_id_for,
    decode,
    import_contacts,
    is_valid_email,
    read_csv,
    read_vcards,
    stored_contacts,
    write_csv,
    write_vcards,
)
from store.models import FactRow
from store.replay import verify

# Google Contacts, "Google CSV" (the legacy export): several values in one cell are joined
# with " ::: ", and the name is given whole and in parts.
GOOGLE_LEGACY = (
    "Name,Given Name,Additional Name,Family Name,Yomi Name,Given Name Yomi,Additional Name Yomi,"
    "Family Name Yomi,Name Prefix,Name Suffix,Initials,Nickname,Short Name,Maiden Name,Birthday,"
    "Gender,Location,Billing Information,Directory Server,Mileage,Occupation,Hobby,Sensitivity,"
    "Priority,Subject,Notes,Language,Photo,Group Membership,E-mail 1 - Type,E-mail 1 - Value,"
    "E-mail 2 - Type,E-mail 2 - Value,Phone 1 - Type,Phone 1 - Value,Organization 1 - Type,"
    "Organization 1 - Name,Organization 1 - Yomi Name,Organization 1 - Title\r\n"
    'Jane Doe,Jane,,Doe,,,,,,,,,,,,,,,,,,,,,,"Met at the Lisbon fair,\r\nwants a quote",,,'
    "* myContacts,* Work,Jane.Doe@Acme.example ::: jane@gmail.example,,,Mobile,+351 912 345 678,"
    ",Acme Lda,,CTO\r\n"
    "Bob Stone,Bob,,Stone,,,,,,,,,,,,,,,,,,,,,,,,,* myContacts,* Home,,Work,bob@stone.example,"
    ",,,Stone & Sons,,\r\n"
)

# Google Contacts, the current export.
GOOGLE_NEW = (
    "First Name,Middle Name,Last Name,Phonetic First Name,Phonetic Middle Name,"
    "Phonetic Last Name,Name Prefix,Name Suffix,Nickname,File As,Organization Name,"
    "Organization Title,Organization Department,Birthday,Notes,Photo,Labels,E-mail 1 - Label,"
    "E-mail 1 - Value,Phone 1 - Label,Phone 1 - Value\n"
    "Ana,Maria,Silva,,,,,,,,Silva Consulting,Partner,,,,,* myContacts,Work,ana@silva.example,"
    "Mobile,+55 11 91234-5678\n"
)

# Outlook, with the UTF-8 BOM Outlook writes; the first address is empty on one row.
OUTLOOK = (
    "\ufeffFirst Name,Middle Name,Last Name,Title,Suffix,Nickname,Given Yomi,Surname Yomi,"
    "E-mail Address,E-mail 2 Address,E-mail 3 Address,Home Phone,Home Phone 2,Business Phone,"
    "Business Phone 2,Mobile Phone,Car Phone,Other Phone,Primary Phone,Pager,Business Fax,"
    "Home Fax,Other Fax,Company Main Phone,Callback,Radio Phone,Telex,TTY/TDD Phone,IMAddress,"
    "Job Title,Department,Company,Office Location,Manager's Name,Assistant's Name,"
    "Assistant's Phone,Company Yomi,Business Street,Business City,Business State,"
    "Business Postal Code,Business Country/Region,Notes\r\n"
    "Jürgen,,Weiß,,,,,,juergen@weiss.example,,,,,+49 30 1234567,,,,,,,,,,,,,,,,,,"
    "Weiß GmbH,,,,,,,,,,,Prefers calls\r\n"
    "Li,,Wei,,,,,,,li.wei@example.cn,,,,,,+86 10 5555 0101,,,,,,,,,,,,,,,,,,,,,,,,,\r\n"
)

HUBSPOT = (
    "Record ID,First Name,Last Name,Email,Phone Number,Company Name,Lifecycle Stage\n"
    "101,Grace,Hopper,grace@navy.example,+1 202 555 0199,US Navy,lead\n"
)

# European Excel: semicolons, commas inside values.
SEMICOLON = (
    'Name;E-mail Address;Company;Notes\r\n"Dupont, Marie";marie@dupont.example;'
    'Dupont & Fils, SARL;"rappeler lundi; devis"\r\n'
)


def test_a_google_contacts_export_is_read_with_its_column_names() -> None:
    result = read_csv(GOOGLE_LEGACY)

    assert result.errors == []
    assert result.records == [
        ContactRecord(
            name="Jane Doe",
            email="jane.doe@acme.example",  # the first of the " ::: " values, lower-cased
            company="Acme Lda",
            phone="+351 912 345 678",
            notes="Met at the Lisbon fair,\nwants a quote",
        ),
        ContactRecord(name="Bob Stone", email="bob@stone.example", company="Stone & Sons"),
    ]


def test_the_current_google_export_composes_the_name_from_its_parts() -> None:
    assert read_csv(GOOGLE_NEW).records == [
        ContactRecord(
            name="Ana Maria Silva",
            email="ana@silva.example",
            company="Silva Consulting",
            phone="+55 11 91234-5678",
        )
    ]


def test_an_outlook_export_with_a_bom_falls_back_to_the_second_address() -> None:
    result = read_csv(OUTLOOK)

    assert result.errors == []
    assert result.records == [
        ContactRecord(
            name="Jürgen Weiß",
            email="juergen@weiss.example",
            company="Weiß GmbH",
            phone="+49 30 1234567",
            notes="Prefers calls",
        ),
        ContactRecord(
            name="Li Wei", email="li.wei@example.cn", company="", phone="+86 10 5555 0101"
        ),
    ]


def test_a_hubspot_export_and_header_names_in_any_case() -> None:
    assert read_csv(HUBSPOT).records == [
        ContactRecord("Grace Hopper", "grace@navy.example", "US Navy", "+1 202 555 0199")
    ]
    shouting = "FULL NAME,EMAIL ADDRESS,ORGANIZATION\nAda Lovelace,ada@engine.example,Engines\n"
    assert read_csv(shouting).records == [
        ContactRecord("Ada Lovelace", "ada@engine.example", "Engines")
    ]


def test_a_semicolon_separated_file_is_recognised() -> None:
    assert read_csv(SEMICOLON).records == [
        ContactRecord(
            name="Dupont, Marie",
            email="marie@dupont.example",
            company="Dupont & Fils, SARL",
            notes="rappeler lundi; devis",
        )
    ]


def test_bad_rows_are_reported_with_their_first_line_and_the_rest_is_read() -> None:
    text = (
        "Name,Email,Company,Notes\n"  # line 1
        'Ann,ann@a.example,A,"two\nlines"\n'  # lines 2-3
        "No Address,,B,\n"  # line 4
        "\n"  # line 5: blank, skipped
        "Typo,carl(at)c.example,C,\n"  # line 6
        f"{'x' * 201},long@l.example,L,\n"  # line 7
        "Dee,dee@d.example,D,\n"  # line 8
        f"Ed,ed@{'.'.join(['d' * 60] * 4)}.example,E,\n"  # line 9: 254 characters
    )

    result = read_csv(text)

    assert [r.email for r in result.records] == ["ann@a.example", "dee@d.example"]
    assert result.errors == [
        RowError(4, "no email address"),
        RowError(6, "invalid email address 'carl(at)c.example'"),
        RowError(7, "name longer than 200 characters"),
        RowError(9, "email address longer than 247 characters"),
    ]


def test_rows_sharing_an_address_are_merged_first_value_first() -> None:
    text = (
        "Name,Email,Company,Phone\n"
        "Jane,JANE@acme.example,,\n"
        "Jane Doe,jane@acme.example,Acme,+1 555\n"
        "Other,jane@Acme.example,Other Co,+1 999\n"
    )
    assert read_csv(text).records == [
        ContactRecord(name="Jane", email="jane@acme.example", company="Acme", phone="+1 555")
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("\ufeff\n\n", "empty"),
        ("Name,Company\nJane,Acme\n", "no email column"),
        ("jane@acme.example,Jane\n", "no email column"),  # no header row
    ],
)
def test_a_file_without_a_header_with_an_email_column_is_unusable(text: str, message: str) -> None:
    with pytest.raises(ContactFileError, match=message):
        read_csv(text)


def test_files_are_decoded_from_utf8_utf16_or_windows_1252() -> None:
    assert decode("\ufeffName,Email\n".encode()) == ("Name,Email\n", "utf-8")
    assert decode(codecs.BOM_UTF16_LE + "Nöme\n".encode("utf-16-le")) == ("Nöme\n", "utf-16")
    assert decode("Jürgen Weiß".encode("cp1252")) == ("Jürgen Weiß", "cp1252")
    with pytest.raises(ContactFileError, match="NUL"):
        decode(b"PK\x03\x04\x00\x00")


@pytest.mark.parametrize(
    ("address", "valid"),
    [
        ("jane@acme.example", True),
        ("jane.doe+crm@mail.acme.co.uk", True),
        ("josé@exemplo.example", True),
        ("jane@acme", False),
        ("jane@@acme.example", False),
        ("jane doe@acme.example", False),
        (".jane@acme.example", False),
        ("jane..doe@acme.example", False),
        ("jane@-acme.example", False),
        ("jane@10.0.0.1", False),
        ("@acme.example", False),
        ("a" * 65 + "@acme.example", False),
    ],
)
def test_the_email_check(address: str, valid: bool) -> None:
    assert is_valid_email(address) is valid


def test_a_spreadsheet_formula_is_quoted_on_export_and_unquoted_on_import() -> None:
    records = [
        ContactRecord('=HYPERLINK("http://evil.example")', "x@x.example", "@SUM(A1)", "+44 20"),
        ContactRecord("Plain", "p@p.example", "-minus co", "-", 'a,b\n"quoted"'),
    ]

    text = write_csv(records)

    assert "'=HYPERLINK" in text and "'@SUM" in text and "'-minus" in text
    assert ",+44 20," in text  # a phone number is not a formula
    assert text.startswith("Name,Email,Company,Phone,Notes\r\n")
    assert read_csv(text) == read_csv(text) and read_csv(text).records == records


# vCard ---------------------------------------------------------------------------------

# Apple Contacts style 3.0: grouped properties, TYPE=pref, folded lines, escapes; then a
# 2.1 card (bare parameters, quoted-printable in Latin-1 with soft line breaks); then a card
# with only N.
VCARD_3 = (
    "BEGIN:VCARD\r\n"
    "VERSION:3.0\r\n"
    "PRODID:-//Apple Inc.//macOS 14.0//EN\r\n"
    "N:Doe;Jane;Q.;Dr.;\r\n"
    "FN:Jane Doe\r\n"
    "ORG:Acme\\, Inc.;Research\r\n"
    "item1.EMAIL;type=INTERNET;type=WORK:jane@acme.example\r\n"
    "item2.EMAIL;type=INTERNET;type=HOME;type=pref:Jane.Doe@Home.example\r\n"
    "TEL;type=CELL;type=VOICE;type=pref:+1 (555) 010-0100\r\n"
    "NOTE:Met at the Lisbon fair\\; wants a quote for the audit\\, and a follow-up c\r\n"
    " all next week.\\nSecond line.\r\n"
    "END:VCARD\r\n"
    "BEGIN:VCARD\r\n"
    "VERSION:2.1\r\n"
    "N;CHARSET=ISO-8859-1;ENCODING=QUOTED-PRINTABLE:Wei=DF;J=FCrgen\r\n"
    "FN;CHARSET=ISO-8859-1;ENCODING=QUOTED-PRINTABLE:J=FCrgen Wei=DF\r\n"
    "EMAIL;INTERNET:juergen@weiss.example\r\n"
    "NOTE;ENCODING=QUOTED-PRINTABLE;CHARSET=UTF-8:Gr=C3=BC=C3=9Fe aus =\r\n"
    "Berlin=0D=0Aund M=C3=BCnchen\r\n"
    "END:VCARD\r\n"
    "\r\n"
    "BEGIN:VCARD\r\n"
    "VERSION:3.0\r\n"
    "N:Lovelace;Ada;;;\r\n"
    "EMAIL:ada@engine.example\r\n"
    "END:VCARD\r\n"
)


def test_vcard_3_and_2_1_with_folding_quoted_printable_and_escapes() -> None:
    result = read_vcards(VCARD_3)

    assert result.errors == []
    assert result.records == [
        ContactRecord(
            name="Jane Doe",
            email="jane.doe@home.example",  # the preferred address
            company="Acme, Inc.",
            phone="+1 (555) 010-0100",
            notes="Met at the Lisbon fair; wants a quote for the audit, and a follow-up call "
            "next week.\nSecond line.",
        ),
        ContactRecord(
            name="Jürgen Weiß",
            email="juergen@weiss.example",
            company="",
            notes="Grüße aus Berlin\nund München",
        ),
        ContactRecord(name="Ada Lovelace", email="ada@engine.example", company=""),
    ]


def test_vcard_4_pref_parameter_and_tel_uri() -> None:
    text = (
        "BEGIN:VCARD\nVERSION:4.0\nFN:Grace Hopper\n"
        "EMAIL;TYPE=work;PREF=2:grace@navy.example\n"
        "EMAIL;TYPE=home;PREF=1:grace@home.example\n"
        'TEL;VALUE=uri;TYPE="voice,cell":tel:+1-202-555-0199\n'
        "END:VCARD\n"
    )
    assert read_vcards(text).records == [
        ContactRecord("Grace Hopper", "grace@home.example", "", "+1-202-555-0199")
    ]


def test_bad_cards_are_reported_with_their_line() -> None:
    text = (
        "BEGIN:VCARD\nVERSION:3.0\nFN:No Mail\nEND:VCARD\n"  # 1-4
        "BEGIN:VCARD\nVERSION:3.0\nFN:Bad Mail\nEMAIL:bad@\nEND:VCARD\n"  # 5-9
        "BEGIN:VCARD\nVERSION:2.1\nFN:Odd\nEMAIL:odd@o.example\n"  # 10-13
        "NOTE;ENCODING=QUOTED-PRINTABLE;CHARSET=x-unknown:=41\nEND:VCARD\n"  # 14-15
        "stray text\n"  # 16
        "BEGIN:VCARD\nVERSION:4.0\nFN:Good\nEMAIL:good@g.example\nEND:VCARD\n"  # 17-21
        "BEGIN:VCARD\nVERSION:4.0\nFN:Unclosed\nEMAIL:u@u.example\n"  # 22-25
    )

    result = read_vcards(text)

    assert [r.email for r in result.records] == ["good@g.example"]
    assert [(e.line, e.reason.split(":")[0]) for e in result.errors] == [
        (1, "no email address"),
        (5, "invalid email address 'bad@'"),
        (14, "cannot decode the quoted-printable value as x-unknown"),
        (16, "text outside a vCard"),
        (22, "vCard has no END"),
    ]


def test_a_file_without_a_vcard_is_unusable() -> None:
    with pytest.raises(ContactFileError, match="no vCard"):
        read_vcards("Name,Email\nJane,jane@acme.example\n")


TRICKY = [
    ContactRecord(
        name="Zoë Ünïcødé-Ødegård, Jr.",
        email="zoe@example.example",
        company="Ødegård; Søn\\Partners, AS",
        phone="+47 22 33 44 55",
        notes="Line one; with, punctuation\nLine two \\n is not a newline\n" + "é" * 120,
    ),
    ContactRecord(name="", email="noname@example.example", company=""),
]


def test_vcard_4_round_trip_is_exact_folded_and_crlf() -> None:
    text = write_vcards(TRICKY)

    lines = text.split("\r\n")
    assert lines[:2] == ["BEGIN:VCARD", "VERSION:4.0"] and lines[-1] == ""
    assert "\n" not in text.replace("\r\n", "")
    assert max(len(line.encode()) for line in lines) == 75  # folded, at the limit
    assert "ORG:Ødegård\\; Søn\\\\Partners\\, AS" in text.replace("\r\n ", "")
    assert read_vcards(text) == read_vcards(text) and read_vcards(text).records == TRICKY


def test_vcard_lines_fold_at_75_octets_between_characters() -> None:
    ascii_card = write_vcards([ContactRecord("a" * 200, "a@a.example", "")]).split("\r\n")
    fn = [line for line in ascii_card if line.startswith(("FN:", " "))]
    assert [len(line) for line in fn] == [75, 75, 55]  # 203 = 75 + 74 + 54
    assert all(line.startswith(" ") for line in fn[1:])

    # "FN:" + 71 letters is 74 octets: the 2-octet "é" moves whole to the next line.
    wide = write_vcards([ContactRecord("b" * 71 + "é" * 3, "b@b.example", "")])
    assert "FN:" + "b" * 71 + "\r\n éé" in wide


def test_csv_round_trip_is_exact() -> None:
    assert read_csv(write_csv(TRICKY)).records == TRICKY


# The store -----------------------------------------------------------------------------


def _events(store: Store) -> list[ev.RecordedEvent]:
    return store.log.read_all(limit=10_000)


def _facts(contact_id: str) -> dict[str, str]:
    rows = FactRow.select().where(
        (FactRow.subject == f"contact:{contact_id}") & (FactRow.status == "current")
    )
    return {r.key: r.value for r in rows}


def test_importing_creates_contacts_with_facts_and_again_appends_nothing(store: Store) -> None:
    records = read_csv(GOOGLE_LEGACY).records

    first = import_contacts(store.log, records, by="cli", source="import google.csv")
    count = len(_events(store))
    again = import_contacts(store.log, records, by="cli", source="import google.csv")

    assert first == ImportSummary(created=2, updated=0, unchanged=0)
    assert again == ImportSummary(created=0, updated=0, unchanged=2)
    assert len(_events(store)) == count == 4  # 2 ContactCreated; Jane's phone and notes
    jane = queries.contact_by_email("JANE.DOE@acme.example")
    assert jane is not None and jane.contact_id == contact_id_for("jane.doe@acme.example")
    assert (jane.name, jane.company) == ("Jane Doe", "Acme Lda")
    assert _facts(jane.contact_id) == {
        "name": "Jane Doe",
        "email": "jane.doe@acme.example",
        "company": "Acme Lda",
        "phone": "+351 912 345 678",
        "notes": "Met at the Lisbon fair,\nwants a quote",
    }
    created = [e for e in _events(store) if isinstance(e.data, ev.ContactCreated)]
    assert {e.idempotency_key for e in created} == {
        "contact:jane.doe@acme.example",
        "contact:bob@stone.example",
    }
    assert {e.metadata.actor for e in _events(store)} == {"cli"}


def test_importing_updates_what_differs_and_empty_fields_erase_nothing(store: Store) -> None:
    import_contacts(
        store.log,
        [ContactRecord("Jane Doe", "jane@acme.example", "Acme", "+1 555 0100", "likes tea")],
        by="cli",
        source="first",
    )
    before = len(_events(store))

    summary = import_contacts(
        store.log,
        [
            ContactRecord("Jane Q. Doe", "Jane@Acme.example", "", "", "LIKES  tea"),
            ContactRecord("", "jane@acme.example", "", "+1 555 0199", ""),  # merged: the phone
            ContactRecord("New Person", "new@person.example", "", "", ""),
        ],
        by="op",
        source="second",
    )

    assert summary == ImportSummary(created=1, updated=1, unchanged=0)
    assert verify(store.log).ok  # the read models replay to the same state
    added = _events(store)[before:]
    assert [type(e.data).__name__ for e in added] == [
        "ContactUpdated",
        "FactAsserted",
        "ContactCreated",
    ]
    update = added[0].data
    assert isinstance(update, ev.ContactUpdated)
    assert (update.name, update.company, update.email) == ("Jane Q. Doe", None, None)
    jane = queries.contact_by_email("jane@acme.example")
    assert jane is not None and (jane.name, jane.company) == ("Jane Q. Doe", "Acme")
    facts = _facts(jane.contact_id)
    assert (facts["phone"], facts["notes"]) == ("+1 555 0199", "likes tea")  # same notes kept


def test_a_contact_an_agent_created_is_matched_by_address(store: Store) -> None:
    store.log.append(  # as agents/context.py creates one
        ev.contact_stream("a" * 32),
        [
            ev.NewEvent(
                ev.ContactCreated(
                    contact_id="a" * 32, name="Jane", email="jane@acme.example", company="Acme"
                ),
                idempotency_key="contact:jane@acme.example",
            )
        ],
        metadata=ev.Metadata(actor="agent:lead", correlation_id="j1"),
        expected_version=0,
    )

    summary = import_contacts(
        store.log,
        [ContactRecord("Jane", "JANE@ACME.EXAMPLE", "Acme", phone="+1 555")],
        by="cli",
        source="import",
    )

    assert summary == ImportSummary(created=0, updated=1, unchanged=0)
    assert _facts("a" * 32)["phone"] == "+1 555"
    assert len(stored_contacts()) == 1


def test_an_address_freed_by_a_correction_becomes_a_new_contact(store: Store) -> None:
    import_contacts(store.log, [ContactRecord("Jane", "jane@old.example", "")], by="t", source="s")
    old_id = contact_id_for("jane@old.example")
    store.log.append(
        ev.contact_stream(old_id),
        [ev.ContactUpdated(contact_id=old_id, email="jane@new.example")],
        metadata=ev.Metadata(actor="op"),
    )

    summary = import_contacts(
        store.log, [ContactRecord("Someone", "jane@old.example", "")], by="t", source="s"
    )

    assert summary.created == 1
    renewed = queries.contact_by_email("jane@old.example")
    assert renewed is not None and renewed.contact_id != old_id and renewed.name == "Someone"
    assert queries.get_contact(old_id).email == "jane@new.example"


@pytest.mark.parametrize("fmt", ["csv", "vcf"])
def test_import_export_import_round_trip_appends_nothing(store: Store, fmt: str) -> None:
    write, read = (write_csv, read_csv) if fmt == "csv" else (write_vcards, read_vcards)
    import_contacts(store.log, read_csv(OUTLOOK).records, by="t", source="s")
    import_contacts(store.log, TRICKY, by="t", source="s")
    count = len(_events(store))

    exported = write(stored_contacts())
    summary = import_contacts(store.log, read(exported).records, by="t", source="again")

    assert summary == ImportSummary(created=0, updated=0, unchanged=4)
    assert len(_events(store)) == count
    assert write(stored_contacts()) == exported
    assert [c.name for c in stored_contacts()] == [
        "",
        "Jürgen Weiß",
        "Li Wei",
        "Zoë Ünïcødé-Ødegård, Jr.",
    ]


def test_a_dry_run_counts_the_same_and_writes_nothing(store: Store) -> None:
    import_contacts(
        store.log, [ContactRecord("Jane", "jane@acme.example", "A")], by="t", source="s"
    )
    count = len(_events(store))
    records = [*read_csv(HUBSPOT).records, ContactRecord("Jane", "jane@acme.example", "B")]

    dry = import_contacts(store.log, records, by="t", source="s", dry_run=True)

    assert dry == ImportSummary(created=1, updated=1, unchanged=0)
    assert len(_events(store)) == count
    assert import_contacts(store.log, records, by="t", source="s") == dry
