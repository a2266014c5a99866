"""Turning read models and events into text a person reads on a phone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.buttons import approval_buttons, question_buttons
from bot.messages import Reply
from jobs.service import StatusReport
from store import events as ev
from store.memory.service import MemoryStatus
from store.queries import ActionView, ApprovalView, JobView, QuestionView, short_id

BODY_PREVIEW = 1500


def when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def action_preview(action: ActionView) -> str:
    if action.connector == "email" and action.action == "send_email":
        body = str(action.params.get("body", ""))
        if len(body) > BODY_PREVIEW:
            body = body[:BODY_PREVIEW].rstrip() + "\n…"
        return f"To: {action.params.get('to')}  Subject: {action.params.get('subject')}\n\n{body}"
    return action.summary


def approve_label(action: ActionView) -> str:
    return "Approve and send" if action.action == "send_email" else "Approve"


def flags_block(action: ActionView) -> str:
    """What to look at before approving (warnings first), or nothing."""
    if not action.flags:
        return ""
    ordered = sorted(action.flags, key=lambda f: not f.startswith("⚠"))
    head = "CHECK BEFORE APPROVING:" if any(f.startswith("⚠") for f in ordered) else "Note:"
    return "\n".join([head, *ordered]) + "\n"


def proposal(
    job: JobView, action: ActionView, approval: ApprovalView, *, headline: str = ""
) -> Reply:
    """One pending action with its Approve / (Edit) / Reject buttons; anything unusual about
    it (a recipient or amount nobody gave, a changed address) above the preview."""
    head = headline or job.summary or action.summary
    return Reply(
        f"{head} [job {job.short_id}]\n{flags_block(action)}{action_preview(action)}",
        approval_buttons(
            approval.token,
            approve_label=approve_label(action),
            editable=(action.connector, action.action) == ("email", "send_email"),
        ),
    )


def reminder(data: ev.ApprovalsReminded, items: Sequence[tuple[ApprovalView, ActionView]]) -> str:
    """One reminder for the decisions waiting in a chat."""
    waiting = len(items)
    lines = [
        f"Reminder: {waiting} decision{'s' if waiting != 1 else ''} waiting for you "
        f"(the oldest since {when(data.oldest_requested_at)}):"
    ]
    for approval, action in items[:10]:
        warn = " ⚠" if any(f.startswith("⚠") for f in action.flags) else ""
        lines.append(f"- {action.summary}{warn} (expires {when(approval.expires_at)})")
    if waiting > 10:
        lines.append(f"… and {waiting - 10} more")
    lines.append("/approvals to decide, with buttons.")
    return "\n".join(lines)


def question(job: JobView, q: QuestionView, action: ActionView | None) -> Reply:
    """A question with its buttons: a failure to retry or discard, an outcome to confirm."""
    labels = (
        {"retry": "Send again"}
        if q.kind == "action_unknown" and action and action.action == "send_email"
        else {}
    )
    if q.kind == "job_failed":
        head = f"Job {job.short_id} ({job.agent}) failed: {q.text}"
    elif q.kind == "budget":
        head = f"Job {job.short_id} ({job.agent}) is waiting for you. {q.text}"
    else:
        head = q.text
    return Reply(
        f"{head} (/trace {job.short_id})", question_buttons(q.token, q.choices, labels=labels)
    )


def answered(q: QuestionView) -> str:
    return f"Already answered: {q.answer} by {q.answered_by} at {when(q.answered_at)}."


def action_done(job: JobView, action: ActionView) -> str:
    if action.action == "send_email":
        return f"Sent to {action.params.get('to')}. (/trace {job.short_id})\n{action.result}"
    return f"Done: {action.summary}. (/trace {job.short_id})"


def decision(action: ActionView, approval: ApprovalView) -> str:
    verb = {"approved": "approved", "rejected": "rejected", "expired": "expired"}.get(
        approval.status, approval.status
    )
    by = f" by {approval.decided_by}" if approval.decided_by else ""
    return f"Already decided: {verb}{by} at {when(approval.decided_at)}. ({action.summary})"


def status(report: StatusReport) -> str:
    counts = report.counts
    depth = "unknown" if report.broker_depth is None else str(report.broker_depth)
    lines = [
        f"Queue ({report.broker}): {depth} waiting in the broker, {counts.get('queued', 0)} queued in the log",
        f"Jobs: {counts.get('running', 0)} running, {counts.get('awaiting_approval', 0)} awaiting approval, "
        f"{counts.get('done', 0)} done, {counts.get('failed', 0)} failed",
        f"Approvals waiting: {report.pending_approvals}",
    ]
    if report.last_error is not None:
        err = report.last_error
        lines.append(f"Last error: job {err.short_id} at {when(err.finished_at)}: {err.error}")
    else:
        lines.append("Last error: none")
    if report.memory is not None:
        lines.append(memory_status(report.memory))
    if report.slos:
        lines.append("Objectives:")
        lines += [f"- {slo.line()}" for slo in report.slos]
    return "\n".join(lines)


def memory_status(status: MemoryStatus) -> str:
    model = f", model {status.model}" if status.model else ""
    line = (
        f"Memory ({status.backend}, {status.mode}{model}): {status.items} memories, "
        f"{status.facts} facts"
    )
    return "\n".join([line, *(f"  ⚠ {note}" for note in status.notes)])


def describe(event: ev.RecordedEvent) -> str:
    """One event in a few words, for traces and histories."""
    d = event.data
    match d:
        case ev.JobRequested():
            return f"{d.text!r} by {d.requested_by} via {d.channel}"
        case ev.JobStarted():
            return f"worker {d.worker}, attempt {d.attempt}"
        case ev.ContactCreated():
            return f"{d.name} <{d.email}>" + (f" ({d.company})" if d.company else "")
        case ev.ContactRecalled():
            return f"known contact {short_id(d.contact_id)}"
        case ev.ModelCalled():
            label = (
                " (offline template)"
                if d.offline
                else " (cache hit: nothing spent)"
                if d.cached
                else ""
            )
            return (
                f"{d.provider}/{d.model}{label}: {d.task}, {d.prompt_tokens}+{d.completion_tokens} tokens, "
                f"${d.cost_usd:.4f} (estimated ${d.estimated_usd:.4f}), {d.latency_ms:.0f} ms"
            )
        case ev.BudgetBlocked():
            return (
                f"not called: {d.scope} {d.period} ${d.spent_usd:.4f} of ${d.limit_usd:.2f} spent, "
                f"+${d.estimate_usd:.4f} would cross it"
            )
        case ev.BudgetWarning():
            return f"{d.scope} {d.period}: ${d.spent_usd:.4f} of ${d.limit_usd:.2f} (80 %)"
        case ev.BudgetOverride():
            return f"${d.usd:.4f} more allowed once by {d.by}"
        case ev.ActionProposed():
            extra = "".join(f"\n      {flag}" for flag in d.flags)
            again = f" (replaces {short_id(d.revises)})" if d.revises else ""
            return f"{d.summary}{again}{extra}"
        case ev.ActionSuperseded():
            return f"replaced by {short_id(d.by_action_id)}: {d.reason}"
        case ev.EditRequested():
            return f"{d.by} asked to edit it"
        case ev.EditSubmitted():
            return f"correction sent to revision job {short_id(d.job_id)}: {d.correction!r}"
        case ev.ContactUpdated():
            return "updated: " + ", ".join(
                f"{k} {v}"
                for k, v in (("name", d.name), ("email", d.email), ("company", d.company))
                if v
            )
        case ev.ApprovalRequested():
            return f"buttons sent, expire {when(d.expires_at)}"
        case ev.ApprovalDecided():
            return f"{d.decision} by {d.decided_by} via {d.channel}"
        case ev.ApprovalExpired():
            return "expired unanswered"
        case ev.ActionStarted():
            return f"attempt {d.attempt} on {d.worker}"
        case ev.ActionExecuted():
            return d.summary
        case ev.ActionFailed():
            return f"{d.error_type}: {d.error}"
        case ev.ActionRejected():
            return f"nothing sent ({d.decided_by})"
        case ev.JobCompleted():
            return d.summary
        case ev.JobFailed():
            return f"{d.error_type}: {d.error} (after {d.attempts} attempt{'s' if d.attempts > 1 else ''})"
        case ev.JobAttemptFailed() | ev.ActionAttemptFailed():
            return f"attempt {d.attempt}: {d.error_type}: {d.error}; retry in {d.retry_in_s:.1f} s"
        case ev.JobRequeued() | ev.ActionRequeued():
            return f"sent to the queue again: {d.reason}"
        case ev.JobRetried() | ev.ActionRetried():
            return f"retry asked by {d.by}"
        case ev.JobCancelled():
            return f"cancelled by {d.by}"
        case ev.StepCompleted():
            return f"checkpoint {d.step!r}"
        case ev.ActionOutcomeUnknown():
            return d.reason
        case ev.ActionDiscarded():
            return f"discarded by {d.by}"
        case ev.ActionCompensated():
            return f"undone with {d.compensation}: {d.summary} ({d.reason})"
        case ev.ActionCompensationFailed():
            return f"undo with {d.compensation} failed: {d.error_type}: {d.error}"
        case ev.QuestionAsked():
            return f"asked the operator: {', '.join(d.choices)}"
        case ev.QuestionAnswered():
            return f"{d.choice} by {d.answered_by} via {d.channel}"
        case ev.MemoryRecalled():
            return _recalled(d)
        case ev.MemoryStored():
            return f"{d.kind} {d.memory_id} stored: {d.text[:80]!r}"
        case ev.FactAsserted():
            return f"{d.subject} {d.key} = {d.value!r} ({d.source})"
    return ""


def _recalled(d: ev.MemoryRecalled) -> str:
    head = f"{d.query[:60]!r} ({d.mode}{', cache hit' if d.cached else ''}): "
    head += f"{len(d.hits)} memor{'y' if len(d.hits) == 1 else 'ies'}, {len(d.facts)} facts"
    hits = "".join(
        f"\n      {h.get('memory_id')} {h.get('kind')} {str(h.get('preview', ''))[:60]!r}"
        for h in d.hits[:3]
    )
    return head + hits


def budget(lines: Sequence[tuple[str, str, float, float]]) -> str:
    """Spend against budgets: (scope, period, spent, limit) rows, with a small bar each."""
    out = ["Spend against budgets:"]
    for scope, period, spent, limit in lines:
        share = spent / limit if limit else 0.0
        bar = "█" * min(int(share * 10), 10) + "░" * (10 - min(int(share * 10), 10))
        out.append(f"{scope:<14} {period:<16} {bar} ${spent:.4f} of ${limit:.2f} ({share:.0%})")
    return "\n".join(out)


def spend_details(
    cache_day: tuple[str, float, int],
    cache_month: tuple[str, float, int],
    contacts: Sequence[tuple[str, float, int]],
) -> str:
    """Below the budgets: what the model cache saved, and which contacts cost the most."""
    out = [
        "",
        f"Cache: {cache_day[2]} answer(s) reused today (${cache_day[1]:.4f} not spent), "
        f"{cache_month[2]} this month (${cache_month[1]:.4f}).",
    ]
    if contacts:
        out.append("Top contacts this month:")
        out += [f"  {who:<32} ${usd:.4f} ({calls} call(s))" for who, usd, calls in contacts]
    return "\n".join(out)


def job_line(job: JobView) -> str:
    return (
        f"{job.short_id}  {job.status:<17} {job.agent:<6} {when(job.requested_at)}  {job.text[:60]}"
    )


def approval_line(approval: ApprovalView, action: ActionView) -> str:
    return f"{short_id(approval.job_id)}  {approval.token}  expires {when(approval.expires_at)}  {action.summary}"
