"""Flow templates: a business process as data, editable by the operator.

A template is a TOML file (``config/flows/<name>.toml`` ships the defaults; a workspace's own
copy in ``<data dir>/flows/`` wins) naming what starts the flow and its steps in order. The
conductor (:mod:`jobs.flows`) runs them; this module only reads and checks them, failing at
start-up with a hint on a mistake.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from config.errors import ConfigError

BUILTIN_DIR = Path(__file__).parent / "flows"
TEMPLATES = ("consultant", "micro-saas", "content")
_TRIGGER = re.compile(
    r"^(agent:[a-z_]+|webhook:[A-Za-z0-9_-]+:[A-Za-z0-9_.*-]+"
    r"|schedule:(daily|weekly-(mon|tue|wed|thu|fri|sat|sun))@([01]\d|2[0-3]):[0-5]\d)$"
)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def schedule_slot(trigger: str, now: datetime, zone: ZoneInfo) -> tuple[datetime, timedelta]:
    """The latest scheduled moment at or before ``now`` for a ``schedule:`` trigger, and the
    schedule's period. Pure. ``schedule:daily@09:00``, ``schedule:weekly-mon@09:00``, local
    time in ``zone``."""
    spec = trigger.removeprefix("schedule:")
    every, _, clock = spec.partition("@")
    hour, minute = (int(part) for part in clock.split(":"))
    local = now.astimezone(zone)
    day = local.date()
    if every == "daily":
        period = timedelta(days=1)
    else:
        period = timedelta(days=7)
        day -= timedelta(days=(day.weekday() - WEEKDAYS.index(every.split("-")[1])) % 7)
    slot = datetime.combine(day, dt_time(hour, minute), zone)
    if slot > local:
        slot = datetime.combine(day - period, dt_time(hour, minute), zone)
    return slot.astimezone(UTC), period


class FlowStep(BaseModel):
    """One step: run an agent (its proposals wait for approval) or wait for the world."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")
    kind: Literal["agent", "wait"]
    agent: str = ""
    wait_for: Literal["", "won", "payment"] = Field(default="", alias="for")
    timeout_days: float | None = Field(default=None, gt=0)
    # What happens when a wait times out: "stop" ends the flow, a step name jumps there.
    on_timeout: str = "stop"
    # The step after this one (default: the next in the list; "end": the flow is done); lets
    # a reminder loop back.
    then: str = ""
    max_runs: int = Field(default=1, ge=1, le=20)
    description: str = ""

    @model_validator(mode="after")
    def _check_kind(self) -> FlowStep:
        if self.kind == "agent" and not self.agent:
            raise ValueError(f"step {self.name!r}: an agent step names its agent")
        if self.kind == "wait" and not self.wait_for:
            raise ValueError(f"step {self.name!r}: a wait step says what it waits for (for = ...)")
        return self


class FlowTemplate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")
    description: str
    pattern: Literal["conductor", "choreography", "blackboard"] = "conductor"
    # "agent:<name>" (its job is the first step), "webhook:<source>:<event type glob>" or
    # "schedule:daily@HH:MM" / "schedule:weekly-mon@HH:MM" (the operator's time zone).
    trigger: str
    # For a webhook trigger: payload fields (dotted paths) and the glob each must match,
    # e.g. {"action" = "published"}; a delivery that does not match starts nothing.
    when: dict[str, str] = Field(default_factory=dict)
    steps: list[FlowStep] = Field(min_length=1, max_length=30)
    critical: bool = True  # its health is in /status and the digest

    @model_validator(mode="after")
    def _check_steps(self) -> FlowTemplate:
        if not _TRIGGER.match(self.trigger):
            raise ValueError(
                f"trigger {self.trigger!r} must be agent:<name>, "
                "webhook:<source>:<event type> or schedule:daily@HH:MM / "
                "schedule:weekly-mon@HH:MM"
            )
        if self.when and not self.trigger.startswith("webhook:"):
            raise ValueError("'when' filters a webhook's payload: only for a webhook trigger")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError("step names must be unique")
        for step in self.steps:
            for target in (step.then, step.on_timeout if step.on_timeout != "stop" else ""):
                if target and target != "end" and target not in names:
                    raise ValueError(f"step {step.name!r} points at {target!r}, not a step")
        if self.trigger.startswith("agent:") and (
            self.steps[0].kind != "agent" or f"agent:{self.steps[0].agent}" != self.trigger
        ):
            raise ValueError("a flow started by an agent's job has that agent as its first step")
        return self

    def step(self, name: str) -> FlowStep:
        for step in self.steps:
            if step.name == name:
                return step
        raise ConfigError(f"flow {self.name!r} has no step {name!r}")

    def after(self, name: str) -> FlowStep | None:
        """The step that follows ``name`` (its ``then``, else the next one), None at the end."""
        step = self.step(name)
        if step.then == "end":
            return None
        if step.then:
            return self.step(step.then)
        index = [s.name for s in self.steps].index(name)
        return self.steps[index + 1] if index + 1 < len(self.steps) else None

    def agents(self) -> set[str]:
        return {s.agent for s in self.steps if s.kind == "agent"}

    def matches(self, payload: Mapping[str, Any]) -> bool:
        """Whether a webhook payload passes ``when`` (every path present and matching)."""
        for path, pattern in self.when.items():
            value: Any = payload
            for part in path.split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            if value is None or isinstance(value, dict | list):
                return False
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if not fnmatch.fnmatchcase(text, pattern):
                return False
        return True


def read_template(path: Path) -> FlowTemplate:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return FlowTemplate.model_validate(data)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"flow template {path}: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"flow template {path}: {problems}") from exc


def load_templates(names: Iterable[str], *, workspace_dir: Path) -> dict[str, FlowTemplate]:
    """The enabled templates, each from the workspace's copy if there is one, else built in."""
    out: dict[str, FlowTemplate] = {}
    for name in names:
        own = workspace_dir / f"{name}.toml"
        path = own if own.is_file() else BUILTIN_DIR / f"{name}.toml"
        if not path.is_file():
            raise ConfigError(
                f"no flow template {name!r}: looked for {own} and {path}; "
                f"built in: {', '.join(TEMPLATES)}"
            )
        template = read_template(path)
        if template.name != name:
            raise ConfigError(f"{path} declares name = {template.name!r}, expected {name!r}")
        out[name] = template
    return out
