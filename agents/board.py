"""The blackboard: facts agents post for others to pick up, and the backlog read from it.

Triage posts what it learns from a ticket (``customer_blocked``: a customer cannot work
because of a bug; ``bug_reported``; ``feature_request``). Other agents react when they run:
the release agent matches a release's fixes and features against the open posts, tells each
customer concerned (an email to approve) and posts ``bug_fixed`` / ``feature_shipped``, which
closes them; the content agent picks up ``release_published``. ``/backlog`` ranks what is
still open. No agent calls another: the board is the only thing they share.

Matching a change to a post is deliberately simple and explainable: the post's reference
(``T-1a2b3c``) in the commit message, or at least two significant words in common.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from store import business
from store.business import BoardPost

CUSTOMER_BLOCKED = "customer_blocked"
BUG_REPORTED = "bug_reported"
FEATURE_REQUEST = "feature_request"
BUG_FIXED = "bug_fixed"
FEATURE_SHIPPED = "feature_shipped"
RELEASE_PUBLISHED = "release_published"
BUGS = (CUSTOMER_BLOCKED, BUG_REPORTED)
CLOSING = (BUG_FIXED, FEATURE_SHIPPED)

_WORD = re.compile(r"[a-z0-9]+")
_STOP_WORDS = """the and for with from that this have has had was were are not but you your our can
    cannot could would should will when what which into since then than them they their there
    been being just only also very please thanks thank hello dear any some get gets got
    does did doing done its it's all more most less too now today yesterday morning again
    still would like want need needs able use using used way new add added adds fix fixed
    fixes make makes made work works working issue problem error errors bug bugs feat feature
    features request requests customer customers"""
_STOP = frozenset(_STOP_WORDS.split())


def ref_of(post_id: str) -> str:
    """The short reference a commit message can name to close a post: ``T-1a2b3c``."""
    return f"T-{post_id[:6]}"


def keywords(text: str) -> frozenset[str]:
    """Significant words of ``text``: lower case, 3+ characters, no stop words, a plural's
    trailing ``s`` dropped. Pure."""
    words = set()
    for word in _WORD.findall(text.lower()):
        if len(word) < 3 or word in _STOP:
            continue
        words.add(word[:-1] if len(word) > 4 and word.endswith("s") else word)
    return frozenset(words)


def related(change: str, post: BoardPost) -> bool:
    """Whether a release's change line addresses a board post. Pure."""
    if ref_of(post.post_id).lower() in change.lower():
        return True
    summary = str(post.data.get("summary") or post.text)
    return len(keywords(change) & keywords(summary)) >= 2


def open_posts(topics: Sequence[str], *, limit: int = 500) -> list[BoardPost]:
    """Posts of ``topics`` that no ``bug_fixed`` / ``feature_shipped`` post has closed."""
    closed = {
        str(p.data.get("resolves"))
        for p in business.board(topics=CLOSING, limit=5000)
        if p.data.get("resolves")
    }
    return [p for p in business.board(topics=tuple(topics), limit=limit) if p.post_id not in closed]


@dataclass(frozen=True)
class BacklogItem:
    """One line of the backlog: posts about the same thing, grouped."""

    kind: str  # "blocked", "bug" or "feature"
    title: str
    refs: tuple[str, ...]
    customers: tuple[str, ...]
    posts: int
    score: float
    last_seen: datetime


_WEIGHT = {"blocked": 100.0, "bug": 10.0, "feature": 1.0}


def group(posts: Iterable[BoardPost]) -> list[list[BoardPost]]:
    """Posts about the same thing (two significant words in common with the group's first
    post), oldest first within a group. Pure and order-independent for a given set."""
    groups: list[list[BoardPost]] = []
    for post in sorted(posts, key=lambda p: (p.posted_at, p.post_id)):
        words = keywords(str(post.data.get("summary") or post.text))
        for members in groups:
            first = members[0]
            if len(words & keywords(str(first.data.get("summary") or first.text))) >= 2:
                members.append(post)
                break
        else:
            groups.append([post])
    return groups


def backlog(posts: Iterable[BoardPost] | None = None) -> list[BacklogItem]:
    """The open bugs and feature requests, grouped and ranked: customers blocked first, then
    bugs, then features; within each, by how many distinct customers asked (a paying one
    counts double), then by how recently. Pure when ``posts`` is given."""
    if posts is None:
        posts = open_posts((CUSTOMER_BLOCKED, BUG_REPORTED, FEATURE_REQUEST))
    by_kind: dict[str, list[BoardPost]] = {"blocked": [], "bug": [], "feature": []}
    for post in posts:
        kind = {CUSTOMER_BLOCKED: "blocked", BUG_REPORTED: "bug", FEATURE_REQUEST: "feature"}.get(
            post.topic
        )
        if kind is not None:
            by_kind[kind].append(post)
    items: list[BacklogItem] = []
    for kind, members in by_kind.items():
        for grouped in group(members):
            customers = tuple(dict.fromkeys(p.subject for p in grouped))
            paying = sum(1 for p in grouped if p.data.get("paying"))
            score = _WEIGHT[kind] * (len(customers) + paying)
            items.append(
                BacklogItem(
                    kind=kind,
                    title=str(grouped[0].data.get("summary") or grouped[0].text),
                    refs=tuple(ref_of(p.post_id) for p in grouped),
                    customers=customers,
                    posts=len(grouped),
                    score=score,
                    last_seen=max(p.posted_at for p in grouped),
                )
            )
    items.sort(key=lambda i: (-i.score, -i.last_seen.timestamp(), i.title))
    return items


_KIND_LABEL = {"blocked": "\U0001f6a8 blocking", "bug": "\U0001f41e bug", "feature": "\u2728"}


def render_backlog(items: Sequence[BacklogItem], *, limit: int = 15) -> str:
    """The backlog for a phone: one numbered line per item, the refs to close it by."""
    if not items:
        return (
            "The backlog is empty: no open bug or feature request on the board. Tickets land "
            "here after /triage (or a ticket webhook or email, when turned on)."
        )
    lines = [f"Backlog: {len(items)} open item(s), most pressing first"]
    for n, item in enumerate(items[:limit], 1):
        who = ", ".join(item.customers[:3]) + (
            f" +{len(item.customers) - 3}" if len(item.customers) > 3 else ""
        )
        asks = f"{len(item.customers)} customer(s)" if len(item.customers) > 1 else who
        lines.append(f"{n}. {_KIND_LABEL[item.kind]} {item.title} \u2014 {asks} [{item.refs[0]}]")
    if len(items) > limit:
        lines.append(f"\u2026 and {len(items) - limit} more.")
    lines.append("Name the ref in a commit (fix: \u2026 T-1a2b3c) and the release closes it.")
    return "\n".join(lines)
