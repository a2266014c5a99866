"""A generated, seeded benchmark of business memories for the recall index.

The business is a solo consultant who also runs a small SaaS: clients (companies and their
people), engagements (one topic per project: a website redesign, an SEO audit, ...), and
around them the memories opcore would hold: quotes and rates, promises with deadlines,
meeting notes, deliverables, payment-chaser drafts, contracts, support tickets, case
studies, work logs and weekly summaries.

Every client has many memories and every topic recurs across clients, so the distractors are
realistic: a query about "the Acme site overhaul" competes with every other Acme memory and
with every other client's website redesign, and the quote, the promise, the meeting note and
the work log of that same engagement.

Queries target exactly one memory (checked: no other memory carries the facets the query
names) and come in two styles:

- ``paraphrase``: the question a person would ask weeks later, in other words. Topics,
  roles, problems, concerns and metrics have separate vocabularies for memories and for
  questions, and a paraphrase may share at most one content word with its target besides the
  client's name (``overlap`` measures it).
- ``lexical``: a query that reuses the memory's own words, for comparison.

``generate(scale)`` makes about 3,000 memories at scale 1; ``token_stream`` and
``synthetic_texts`` give the latency benchmark texts drawn from the same vocabulary.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from store.memory.base import MEMORY_KINDS
from store.memory.sqlite_index import STOPWORDS

SEED = 20240611


def _words(text: str) -> list[str]:
    return text.split()


# (key, forms used in memories, forms used in paraphrased questions). The two lists share no
# content word, so a paraphrase names the topic without the memory's words.
TOPICS: list[tuple[str, list[str], list[str]]] = [
    (
        "website",
        ["website redesign", "redesign of the website"],
        ["site overhaul", "new look for their web pages", "homepage makeover"],
    ),
    (
        "seo",
        ["SEO audit", "search engine optimisation audit"],
        ["Google ranking review", "assessment of their Google visibility"],
    ),
    (
        "security",
        ["security audit", "penetration test"],
        ["vulnerability review", "hacking-risk check"],
    ),
    ("mobile", ["mobile app", "iOS and Android app"], ["phone application", "smartphone client"]),
    (
        "migration",
        ["data migration", "database migration"],
        ["move of their records to the new system", "transfer of their old records"],
    ),
    (
        "crm",
        ["CRM setup", "HubSpot configuration"],
        ["customer-relationship tool rollout", "sales pipeline software install"],
    ),
    (
        "onboarding",
        ["onboarding email sequence", "welcome email series"],
        ["drip campaign for new signups", "automated messages for fresh users"],
    ),
    (
        "dashboard",
        ["analytics dashboard", "reporting dashboard"],
        ["KPI charts screen", "metrics overview page"],
    ),
    (
        "logo",
        ["logo refresh", "brand identity update"],
        ["new emblem and visual style", "rebranding of their mark"],
    ),
    (
        "pricing",
        ["pricing page", "plans and pricing page"],
        ["page listing their subscription tiers", "tier comparison screen"],
    ),
    (
        "api",
        ["API integration", "REST API connector"],
        ["hookup between their systems", "link between their software and the payment provider"],
    ),
    (
        "speed",
        ["performance tuning", "page speed optimisation"],
        ["app speed-up work", "load-time improvements"],
    ),
    (
        "copy",
        ["copywriting", "landing page copy"],
        ["wording for the sales pages", "marketing text"],
    ),
    (
        "training",
        ["training workshop", "staff training day"],
        ["teaching session for their team", "hands-on course for employees"],
    ),
    (
        "cloud",
        ["AWS cost review", "cloud bill review"],
        ["audit of their hosting spend", "check on what they pay Amazon"],
    ),
    (
        "accessibility",
        ["accessibility audit", "WCAG compliance check"],
        ["review of usability for disabled visitors", "screen-reader friendliness check"],
    ),
    (
        "checkout",
        ["checkout redesign", "shop checkout flow"],
        ["payment funnel rework", "purchase steps in their store"],
    ),
    (
        "newsletter",
        ["monthly newsletter", "email newsletter"],
        ["regular digest to subscribers", "periodic mailing to their list"],
    ),
    (
        "chatbot",
        ["support chatbot", "customer service bot"],
        ["automated assistant answering buyer questions", "AI helper for their help desk"],
    ),
    (
        "gdpr",
        ["GDPR review", "privacy compliance audit"],
        ["data protection check", "check against the EU personal-data rules"],
    ),
    (
        "research",
        ["market research report", "competitor analysis"],
        ["study of rival companies", "landscape of competing products"],
    ),
    (
        "pipeline",
        ["CI/CD pipeline", "deployment pipeline"],
        ["automated build and release setup", "shipping code to production automatically"],
    ),
]

CLIENT_NAMES = _words(
    """
    Acme Bluefin Northwind Larkspur Quillon Brightwater Copperleaf Driftwood Emberly Foxglove
    Granitex Harborview Ironbark Juniper Kestrel Lumenra Maplestone Nimbus Oakridge Pinecrest
    Quartzline Redwood Silverline Tidewater Umbrella Vantage Westbrook Yellowtail Zephyr Alderon
    Birchwood Cobalt Dunmore Everglow Fairhaven Glacia Heronsgate Indigo Jasperly Kingfisher
    Lightwell Meridian Northstar Orchardly Pebblebay Quayside Riverbend Sandpiper Thistledown
    Upland Valemont Willowby Wrenfield Yarrowgate Zinnia Arborly Beaconfield Cascadia Deltaworks
    Eastgate Fennimore Goldcrest Hollybush Islington
    """
)
CLIENT_TRADES = _words(
    """
    Logistics Dental Bakery Legal Health Software Foods Travel Fitness Realty Media Architects
    Clinic Brewing Consulting Insurance Robotics Studio Outdoor Pharma
    """
)
FIRST_NAMES = _words(
    """
    Sarah Tom Priya Lukas Mia Jonas Aisha Daniel Elena Marco Hannah Oliver Sofia Felix Nora Ben
    Leila Jakob Chloe Ravi Emma Paul Ines Samuel Yuki Omar Clara Victor Anna Kofi Greta Liam
    Maya Tobias Zoe Hugo Lena Adam Julia Erik
    """
)
LAST_NAMES = _words(
    """
    Kim Weber Patel Novak Rossi Fischer Okafor Berg Silva Moreau Lindqvist Haas Tanaka Ahmed
    Costa Brandt Nilsson Dubois Keller Murphy Schulz Rahman Vogel Ortiz Lang Meyer Jansen
    Hoffmann Bauer Klein
    """
)

# (role in memories, how a question describes it)
ROLES: list[tuple[str, str]] = [
    ("CFO", "looks after the money"),
    ("CTO", "runs their engineering"),
    ("marketing manager", "handles their campaigns and ads"),
    ("operations manager", "keeps the day-to-day logistics going"),
    ("founder and CEO", "is the boss over there"),
    ("product owner", "decides what gets built"),
    ("office manager", "sorts out admin like invoices arriving"),
]
CHANNELS = ["phone calls", "Slack", "email", "WhatsApp", "video calls", "text messages"]
QUIRKS = [
    "never reads long emails",
    "likes a written agenda before every call",
    "is on parental leave until September",
    "answers fastest early in the morning",
    "wants everything in German",
    "is sceptical of agencies",
    "introduced us to two other clients",
    "signs off anything under 5k on their own",
]

# (memory form, question form) for meeting concerns, ticket problems, case-study metrics.
CONCERNS: list[tuple[str, str]] = [
    ("they are worried the budget will overrun", "afraid of going over cost"),
    ("they want it live before their trade fair", "need it launched ahead of the expo"),
    ("legal has to sign off first", "lawyers must approve before anything starts"),
    ("the board is unhappy with the current colours", "directors dislike the palette"),
    ("their IT team is short-staffed until summer", "tech people lack capacity for months"),
    ("they asked for weekly status reports", "want an update every seven days"),
    ("they may cut the scope in half", "might shrink what's included by 50%"),
    ("the CEO wants to present it to investors", "boss plans to show it to funders"),
    (
        "they are switching accounting software at the same time",
        "changing bookkeeping tools concurrently",
    ),
    (
        "they complained the last vendor missed every deadline",
        "previous contractor was always late",
    ),
]
NEXT_STEPS = [
    "send a revised estimate",
    "draft a timeline",
    "book a follow-up call",
    "share wireframes",
    "write up the requirements",
    "get access to their analytics",
    "prepare a short demo",
]
PROBLEMS: list[tuple[str, str]] = [
    ("the login page returns a 500 error", "people can't sign in, server crashes"),
    ("password reset emails never arrive", "recovery links don't show up in inboxes"),
    ("invoices show the wrong VAT rate", "tax on their bills is miscalculated"),
    ("the CSV export times out", "spreadsheet download hangs forever"),
    ("dashboard charts are blank since the update", "graphs display nothing after the new release"),
    ("webhooks fail with 401 Unauthorized", "callbacks get rejected as not permitted"),
    ("two-factor codes are rejected", "2FA numbers don't work"),
    ("the mobile app crashes on startup", "phone application dies when opening"),
    (
        "customers were charged twice on their credit card",
        "someone got billed double for one purchase",
    ),
    ("search returns no results for accented names", "lookup fails on words with diacritics"),
    ("calendar sync drops events", "appointments go missing when syncing with Google"),
    ("PDF reports render with broken fonts", "printable documents have garbled letters"),
]
WORKAROUNDS = [
    "restarted the worker",
    "asked them to clear the cache",
    "pushed a hotfix",
    "escalated to the hosting provider",
    "none yet",
    "rolled back the release",
]
METRICS: list[tuple[str, str]] = [
    ("conversion rate", "share of visitors who end up buying"),
    ("organic traffic", "visitors arriving from Google"),
    ("page load time", "snappiness of the site"),
    ("support ticket volume", "number of help requests"),
    ("churn", "customers cancelling"),
    ("monthly recurring revenue", "subscription income"),
    ("lead volume", "number of inbound enquiries"),
    ("time spent on manual reporting", "hours lost to spreadsheets"),
]
ARTIFACTS = [
    "a 24-page PDF report and a slide deck",
    "a Figma file and a style guide",
    "the source code in their GitHub repository",
    "a recorded walkthrough video",
    "a spreadsheet of findings with priorities",
    "a Notion handbook",
]
DAYS = [
    "Friday",
    "next Monday",
    "the end of the month",
    "March 14",
    "the 30th",
    "Wednesday noon",
    "the end of Q2",
    "Easter",
    "the first week of June",
    "Thursday",
]
TASKS = [
    "wireframes",
    "stakeholder interviews",
    "bug fixes",
    "QA pass",
    "writing documentation",
    "research",
    "status call",
    "estimating the next phase",
    "reviewing their feedback",
    "setting up the staging environment",
    "first draft",
    "client workshop prep",
]
GENERAL_NOTES = [
    "Idea: raise all day rates by 10% in January and tell clients in November.",
    "Reminder: quarterly VAT return due on the 10th.",
    "Accountant says to keep receipts for the new laptop.",
    "Consider dropping the free tier of the SaaS; it drives most support load.",
    "Newsletter idea: lessons from a year of fixed-price projects.",
    "Trial users who connect Slack in the first week convert twice as often.",
    "Look into professional indemnity insurance renewal before July.",
    "Podcast invite: talk about running a one-person company.",
]

# Templates. Placeholders: client, full (company name), contact, first, topic, price, day,
# date, concern, next, artifact, n, metric, pct, months, problem, workaround, role, channel,
# quirk, rate, hourly, terms, h, task. Question forms use topic_p, concern_p, metric_p,
# problem_p, role_p.
ITEM_TEMPLATES: dict[str, list[str]] = {
    "quote": [
        "{client} agreed to pay {price} for the {topic}.",
        "Quote sent to {contact} at {full}: {topic}, fixed price {price}, half upfront.",
        "Proposal for {client}: {topic} at {price}, valid for 30 days.",
    ],
    "promise": [
        "I promised {client} the {topic} by {day}.",
        "Promised {first} ({client}) that the {topic} would be ready by {day}.",
        "Commitment to {client}: {topic} delivered no later than {day}.",
    ],
    "meeting": [
        "Call with {contact} ({client}) about the {topic}: {concern}. Next step: {next}.",
        "Meeting notes, {client}, {date}: went through the {topic}. Note that {concern}. "
        "Agreed to {next}.",
    ],
    "deliverable": [
        "Delivered the final {topic} to {client}: {artifact}.",
        "Handed over the {topic} for {full}, {artifact}, signed off by {first}.",
    ],
    "draft": [
        "Draft email to {first} at {client}: gentle reminder that the {topic} invoice "
        "({price}) is {n} days overdue.",
        "Draft: follow-up to {client} about the unpaid {topic} invoice, open since {date}.",
    ],
    "case": [
        "Case study: {client}. After the {topic}, {metric} improved by {pct}% within "
        "{months} months.",
        "{full} case study: the {topic} changed their {metric} by {pct}% in {months} months.",
    ],
    "ticket": [
        "Support ticket #{n} from {contact} ({client}): {problem}. Priority high.",
        "Ticket #{n}: {client} reports that {problem}. Workaround: {workaround}.",
    ],
    "contact": [
        "{contact} is the {role} at {full}. Prefers {channel}; {quirk}.",
        "Contact: {contact}, {role} of {client}, best reached via {channel}. {quirk_cap}.",
    ],
    "rate": [
        "Day rate for {client}: {rate} EUR, {hourly} EUR per hour for small fixes, "
        "invoiced {terms}.",
        "{client} pays my standard day rate of {rate} EUR; small fixes at {hourly} EUR/hour.",
    ],
    "contract": [
        "Master services agreement with {full} signed {date}; payment terms net {n}; "
        "renews every {months} months.",
        "Signed the framework contract with {client} on {date}. Net {n} payment terms, "
        "automatic renewal after {months} months.",
    ],
    "worklog": [
        "Spent {h}h on {client} {topic}: {task}.",
        "{date}: {h} hours, {client}, {topic}, {task}.",
        "Worked on the {topic} for {client} ({task}), {h}h.",
    ],
}

# The kind each intent is stored as (every kind is one of base.MEMORY_KINDS).
INTENT_KIND = {
    "quote": "proposal",
    "promise": "note",
    "meeting": "summary",
    "deliverable": "deliverable",
    "draft": "draft",
    "case": "case_study",
    "ticket": "document",
    "contact": "note",
    "rate": "note",
    "contract": "document",
    "worklog": "worklog",
    "weekly": "summary",
    "general": "note",
}

# Paraphrased questions: (facets the question names, templates).
PARAPHRASES: dict[str, list[tuple[tuple[str, ...], list[str]]]] = {
    "quote": [
        (
            ("client", "topic"),
            [
                "how much is the {client} {topic_p} worth?",
                "what fee did {client} accept for the {topic_p}?",
                "what are {client} paying me for the {topic_p}?",
                "what's the budget number on the {topic_p} for {client}?",
            ],
        )
    ],
    "promise": [
        (
            ("client", "topic"),
            [
                "what deadline did I give {client} for the {topic_p}?",
                "when did I say {client} would get the {topic_p}?",
                "by what date does {client} expect the {topic_p} from me?",
            ],
        )
    ],
    "meeting": [
        (
            ("client", "topic"),
            [
                "what came up when I spoke with {client} on the {topic_p}?",
                "what did {client} raise in our conversation on the {topic_p}?",
            ],
        ),
        (
            ("topic", "concern"),
            [
                "which client {concern_p} on the {topic_p}?",
                "who was it that {concern_p} regarding the {topic_p}?",
            ],
        ),
    ],
    "deliverable": [
        (
            ("client", "topic"),
            [
                "what did I ship to {client} when the {topic_p} wrapped up?",
                "in what form did {client} receive the finished {topic_p}?",
            ],
        )
    ],
    "draft": [
        (
            ("client", "topic"),
            [
                "the message I wrote chasing {client} for late payment on the {topic_p}",
                "did I prepare a nudge to {client} about the outstanding bill for the {topic_p}?",
            ],
        )
    ],
    "case": [
        (
            ("topic", "metric"),
            [
                "success story where the {topic_p} moved the {metric_p}",
                "which customer win shows the {metric_p} shifting thanks to the {topic_p}?",
            ],
        )
    ],
    "ticket": [
        (
            ("client", "problem"),
            [
                "did {client} have trouble because {problem_p}?",
                "{client} complained {problem_p}, what was that about?",
            ],
        )
    ],
    "contact": [
        (
            ("client", "role"),
            [
                "who at {client} {role_p}?",
                "which person over at {client} {role_p}?",
            ],
        )
    ],
    "rate": [
        (
            ("client",),
            [
                "what's my standard fee with {client} per eight hours of work?",
                "how much do I bill {client} for a full working day?",
            ],
        )
    ],
    "contract": [
        (
            ("client",),
            [
                "when does my agreement with {client} come up for extension, and when must they pay?",
                "how long until the {client} deal auto-extends?",
            ],
        )
    ],
}

# Lexical questions reuse the memory's own words.
LEXICAL: dict[str, list[tuple[tuple[str, ...], list[str]]]] = {
    "quote": [(("client", "topic"), ["{client} {topic} price, how much did they agree to pay"])],
    "promise": [(("client", "topic"), ["promised {client} the {topic} by when"])],
    "meeting": [(("client", "topic"), ["call notes {client} {topic}"])],
    "deliverable": [(("client", "topic"), ["delivered final {topic} to {client}"])],
    "draft": [(("client", "topic"), ["draft reminder {client} {topic} invoice overdue"])],
    "case": [(("topic", "metric"), ["case study {topic} {metric} improved"])],
    "ticket": [(("client", "problem"), ["{client} ticket {problem}"])],
    "contact": [(("client", "role"), ["{client} {role}"])],
    "rate": [(("client",), ["{client} day rate"])],
    "contract": [(("client",), ["{client} master services agreement renewal"])],
}

_WORD = re.compile(r"[\w']+", re.UNICODE)


def _stem(word: str) -> str:
    """A crude stemmer, enough to see that 'redesigned' and 'redesign' are one word."""
    for suffix in ("ations", "ation", "ings", "ing", "ies", "ers", "ed", "er", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> set[str]:
    """Stemmed lower-case words, without the index's stop words."""
    words = (w.strip("'").lower() for w in _WORD.findall(text))
    return {_stem(w) for w in words if w and w not in STOPWORDS and not w.isdigit()}


@dataclass(frozen=True)
class MemoryItem:
    memory_id: str
    kind: str
    contact_id: str | None
    created_at: datetime
    text: str


@dataclass(frozen=True)
class Query:
    query_id: str
    text: str
    target: str  # the memory_id of the one right answer
    style: str  # "paraphrase" or "lexical"
    intent: str  # the target's intent ("quote", "promise", ...)
    overlap: float  # share of the target's content words (names excluded) in the query


@dataclass(frozen=True)
class Dataset:
    items: list[MemoryItem]
    queries: list[Query]
    seed: int
    clients: int

    def by_style(self, style: str) -> list[Query]:
        return [q for q in self.queries if q.style == style]


@dataclass
class _Draft:
    intent: str
    contact_id: str | None
    created_at: datetime
    text: str
    facets: dict[str, str]
    slots: dict[str, str]  # question-side values (topic_p, client, ...)
    names: set[str] = field(default_factory=set)  # words allowed to be shared (names)


@dataclass(frozen=True)
class _Client:
    key: str
    short: str
    full: str
    contacts: list[tuple[str, str, str, str]]  # (contact_id, full name, first, role)


def _money(rng: random.Random, low: int, high: int) -> str:
    amount = rng.randrange(low, high, 100)
    style = rng.randrange(3)
    if style == 0:
        return f"{amount:,} EUR"
    if style == 1:
        return f"EUR {amount:,}"
    return f"€{amount:,}"


def _date(at: datetime) -> str:
    return at.strftime("%d %B %Y").lstrip("0")


def _clients(rng: random.Random, count: int) -> list[_Client]:
    names = CLIENT_NAMES[:]
    rng.shuffle(names)
    clients: list[_Client] = []
    used_people: set[str] = set()
    for i in range(count):
        base = names[i % len(names)]
        trade = CLIENT_TRADES[(i * 7 + i // len(names)) % len(CLIENT_TRADES)]
        full = f"{base} {trade}"
        short = base if i < len(names) else full  # a reused base name is never used alone
        key = re.sub(r"\W+", "-", full.lower())
        contacts = []
        for j, (role, _) in enumerate(rng.sample(ROLES, 3)):
            while True:
                first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
                if f"{first} {last}" not in used_people:
                    used_people.add(f"{first} {last}")
                    break
            contacts.append((f"ct-{key}-{j}", f"{first} {last}", first, role))
        clients.append(_Client(key, short, full, contacts))
    return clients


def _drafts(rng: random.Random, clients: list[_Client], weekly: int) -> list[_Draft]:
    start = datetime(2023, 1, 2, 9, 0, tzinfo=UTC)
    span_days = 700
    out: list[_Draft] = []
    topics = {key: (forms, para) for key, forms, para in TOPICS}
    ticket_no = 1000
    for client in clients:
        names = set(content_words(client.full)) | {
            w for _, full_name, _, _ in client.contacts for w in content_words(full_name)
        }
        base = {"client": client.short, "full": client.full}
        client_start = start + timedelta(days=rng.randrange(span_days - 200))

        def add(
            intent: str,
            template_vars: dict[str, str],
            facets: dict[str, str],
            when: datetime,
            contact_id: str | None,
            *,
            client: _Client = client,
            names: set[str] = names,
            base: dict[str, str] = base,
        ) -> None:
            template = rng.choice(ITEM_TEMPLATES[intent])
            text = template.format(**base, **template_vars)
            out.append(
                _Draft(
                    intent=intent,
                    contact_id=contact_id,
                    created_at=when,
                    text=text,
                    facets={"client": client.key, **facets},
                    slots={"client": client.short, **template_vars},
                    names=names,
                )
            )

        def person(client: _Client = client) -> tuple[str, str, str, str]:
            return rng.choice(client.contacts)

        primary = client.contacts[0][0]
        # About the client: the contract, the rate, the people.
        when = client_start
        add(
            "contract",
            {"date": _date(when), "n": str(rng.choice([14, 30, 45])), "months": "12"},
            {},
            when,
            primary,
        )
        add(
            "rate",
            {
                "rate": str(rng.randrange(700, 1500, 50)),
                "hourly": str(rng.randrange(90, 180, 10)),
                "terms": rng.choice(["monthly", "at the end of each phase", "every two weeks"]),
            },
            {},
            when + timedelta(days=1),
            primary,
        )
        for role_index, (cid, full_name, first, role) in enumerate(client.contacts):
            quirk = rng.choice(QUIRKS)
            role_p = dict(ROLES)[role]
            add(
                "contact",
                {
                    "contact": full_name,
                    "first": first,
                    "role": role,
                    "role_p": role_p,
                    "channel": rng.choice(CHANNELS),
                    "quirk": quirk,
                    "quirk_cap": quirk[0].upper() + quirk[1:],
                },
                {"role": role},
                when + timedelta(days=2 + role_index),
                cid,
            )
        # Support tickets from the SaaS side.
        for problem, problem_p in rng.sample(PROBLEMS, rng.randint(3, 6)):
            cid, full_name, first, _ = person()
            ticket_no += rng.randint(1, 40)
            add(
                "ticket",
                {
                    "contact": full_name,
                    "first": first,
                    "n": str(ticket_no),
                    "problem": problem,
                    "problem_p": problem_p,
                    "workaround": rng.choice(WORKAROUNDS),
                },
                {"problem": problem},
                client_start + timedelta(days=rng.randrange(span_days - 200)),
                cid,
            )
        # Engagements: one topic each, with their quote, promise, notes, work...
        for topic_key in rng.sample([t[0] for t in TOPICS], 4):
            forms, para = topics[topic_key]
            topic, topic_p = rng.choice(forms), rng.choice(para)
            at = client_start + timedelta(days=rng.randrange(200))
            cid, full_name, first, _ = person()
            common = {"topic": topic, "topic_p": topic_p, "contact": full_name, "first": first}
            facets = {"topic": topic_key}
            price = _money(rng, 800, 24_000)
            add("quote", {**common, "price": price}, facets, at, cid)
            add("promise", {**common, "day": rng.choice(DAYS)}, facets, at + timedelta(days=3), cid)
            concern, concern_p = rng.choice(CONCERNS)
            add(
                "meeting",
                {
                    **common,
                    "date": _date(at + timedelta(days=9)),
                    "concern": concern,
                    "concern_p": concern_p,
                    "next": rng.choice(NEXT_STEPS),
                },
                {**facets, "concern": concern},
                at + timedelta(days=9),
                cid,
            )
            for w in range(rng.randint(4, 7)):
                day = at + timedelta(days=12 + 5 * w)
                add(
                    "worklog",
                    {
                        **common,
                        "h": str(rng.choice([1, 1.5, 2, 3, 4, 6])),
                        "task": rng.choice(TASKS),
                        "date": _date(day),
                    },
                    {**facets, "n": str(w)},
                    day,
                    cid,
                )
            done = at + timedelta(days=50)
            if rng.random() < 0.7:
                add("deliverable", {**common, "artifact": rng.choice(ARTIFACTS)}, facets, done, cid)
            if rng.random() < 0.4:
                add(
                    "draft",
                    {
                        **common,
                        "price": price,
                        "n": str(rng.randint(10, 60)),
                        "date": _date(done + timedelta(days=14)),
                    },
                    facets,
                    done + timedelta(days=40),
                    cid,
                )
            if rng.random() < 0.3:
                metric, metric_p = rng.choice(METRICS)
                add(
                    "case",
                    {
                        **common,
                        "metric": metric,
                        "metric_p": metric_p,
                        "pct": str(rng.randint(8, 70)),
                        "months": str(rng.randint(2, 9)),
                    },
                    {**facets, "metric": metric},
                    done + timedelta(days=90),
                    cid,
                )
    # Weekly summaries mixing several clients, and notes about the business itself.
    for w in range(weekly):
        picked = rng.sample(clients, min(3, len(clients)))
        parts = [f"{c.short} ({rng.choice(rng.choice(TOPICS)[1])})" for c in picked]
        when = start + timedelta(days=7 * (w % 100) + rng.randrange(5))
        text = (
            f"Week {w % 52 + 1} summary: worked on {', '.join(parts)}; "
            f"invoiced {_money(rng, 1000, 15_000)}; {rng.choice(TASKS)} still pending."
        )
        out.append(_Draft("weekly", None, when, text, {"n": str(w)}, {}))
    for i, note in enumerate(GENERAL_NOTES):
        when = start + timedelta(days=rng.randrange(span_days))
        out.append(_Draft("general", None, when, note, {"n": str(i)}, {}))
    return out


def overlap(query: str, target: str, names: set[str]) -> tuple[float, int]:
    """The share of ``target``'s content words (names excluded) that ``query`` repeats, and
    how many such words it repeats."""
    item_words = content_words(target) - names
    shared = (content_words(query) - names) & item_words
    return (len(shared) / len(item_words) if item_words else 0.0), len(shared)


def _candidates(
    rng: random.Random, drafts: list[_Draft], ids: list[str], style: str
) -> dict[str, list[Query]]:
    """Every query of ``style`` whose facets pick out exactly one memory, by intent."""
    templates = PARAPHRASES if style == "paraphrase" else LEXICAL
    index: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    keyed: list[tuple[int, _Draft, tuple[str, ...], list[str]]] = []
    for i, d in enumerate(drafts):
        for keys, forms in templates.get(d.intent, []):
            keyed.append((i, d, keys, forms))
    for d in drafts:
        for keys, _ in templates.get(d.intent, []):
            if all(k in d.facets for k in keys):
                index[(d.intent, tuple((k, d.facets[k]) for k in keys))] += 1
    out: dict[str, list[Query]] = {}
    for i, d, keys, forms in keyed:
        if index[(d.intent, tuple((k, d.facets[k]) for k in keys))] != 1:
            continue  # two memories would answer it: not a query with one right answer
        text = rng.choice(forms).format(**d.slots)
        share, shared = overlap(text, d.text, d.names)
        if style == "paraphrase" and shared > 1:
            continue
        out.setdefault(d.intent, []).append(Query("", text, ids[i], style, d.intent, share))
    return out


def _pick(rng: random.Random, pools: dict[str, list[Query]], count: int) -> list[Query]:
    """``count`` queries spread evenly over the intents (round robin), one per target."""
    pools = {k: rng.sample(v, len(v)) for k, v in sorted(pools.items())}
    picked: list[Query] = []
    seen: set[str] = set()
    while len(picked) < count and any(pools.values()):
        for intent in sorted(pools):
            while pools[intent]:
                q = pools[intent].pop()
                if q.target not in seen:
                    seen.add(q.target)
                    picked.append(q)
                    break
            if len(picked) == count:
                break
    return picked


def generate(
    scale: float = 1.0,
    *,
    seed: int = SEED,
    paraphrased: int | None = None,
    lexical: int | None = None,
) -> Dataset:
    """About ``3000 * scale`` memories and ``200 * scale`` paraphrased and ``60 * scale``
    lexical queries (at least 50 and 20)."""
    rng = random.Random(seed)
    n_clients = max(6, round(57 * scale))
    drafts = _drafts(rng, _clients(rng, n_clients), weekly=max(10, round(100 * scale)))
    rng.shuffle(drafts)
    ids = [f"mem-{i:06d}" for i in range(len(drafts))]
    items = [
        MemoryItem(ids[i], INTENT_KIND[d.intent], d.contact_id, d.created_at, d.text)
        for i, d in enumerate(drafts)
    ]
    assert {i.kind for i in items} <= MEMORY_KINDS
    n_para = paraphrased if paraphrased is not None else max(50, round(200 * scale))
    n_lex = lexical if lexical is not None else max(20, round(60 * scale))
    para = _pick(rng, _candidates(rng, drafts, ids, "paraphrase"), n_para)
    lex = _pick(rng, _candidates(rng, drafts, ids, "lexical"), n_lex)
    queries = [
        Query(f"{q.style[0]}{n:04d}", q.text, q.target, q.style, q.intent, q.overlap)
        for n, q in enumerate(para + lex)
    ]
    return Dataset(items, queries, seed, n_clients)


def token_stream(dataset: Dataset) -> list[str]:
    """Every word of every memory, in order: sampling from it keeps the words' frequencies."""
    return [w for item in dataset.items for w in item.text.split()]


def synthetic_texts(
    tokens: Sequence[str], count: int, rng: np.random.Generator, *, low: int = 8, high: int = 40
) -> list[str]:
    """``count`` texts of ``low``..``high`` words drawn from ``tokens``."""
    vocab = np.asarray(tokens, dtype=object)
    lengths = rng.integers(low, high + 1, size=count)
    words = vocab[rng.integers(0, len(vocab), size=int(lengths.sum()))]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [" ".join(words[bounds[i] : bounds[i + 1]]) for i in range(count)]
