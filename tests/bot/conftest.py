from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.dispatch import Dispatcher
from config import Settings
from jobs.runtime import Runtime, build_runtime
from jobs.service import JobService


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, operators=("console:local", "telegram:42"))


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = build_runtime(settings, with_worker=True)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def service(runtime: Runtime) -> JobService:
    return JobService(runtime)


@pytest.fixture
def dispatcher(settings: Settings, runtime: Runtime, service: JobService) -> Dispatcher:
    return Dispatcher(settings=settings, service=service, log=runtime.store.log)
