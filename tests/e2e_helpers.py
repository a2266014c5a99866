"""Running the real ``opcore`` command line as a subprocess, the way a user does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

LEAD = "/lead Jane Doe <jane@acme.example> wants a website audit, budget 3k"
JOB_ID = re.compile(r"\[job ([0-9a-f]{6})\]")


def opcore_env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPCORE_")}
    env["OPCORE_DATA_DIR"] = str(data_dir)
    env["OPCORE_CONSOLE_DRAIN_SECONDS"] = "30"
    env["OPCORE_LOG_LEVEL"] = "WARNING"
    env.update({f"OPCORE_{k.upper()}": v for k, v in settings.items()})
    return env


def opcore(
    args: list[str], env: dict[str, str], *, stdin: str = "", cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        input=stdin,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_opcore(
    args: list[str], env: dict[str, str], *, cwd: Path, stdin: int = subprocess.DEVNULL
) -> subprocess.Popen[str]:
    """``opcore <args>`` in the background; ``stdin=subprocess.PIPE`` keeps a console open."""
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", *args],
        env=env,
        cwd=cwd,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def job_id_in(output: str) -> str:
    match = JOB_ID.search(output)
    assert match, f"no job id in:\n{output}"
    return match.group(1)


def event_types(job: str, env: dict[str, str], cwd: Path) -> list[str]:
    result = opcore(["events", "--job", job, "--json"], env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["type"] for line in result.stdout.splitlines()]


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]
