"""Broker set-up: Dramatiq's in-process broker for one machine, Redis for many.

``memory://`` uses Dramatiq's StubBroker with a Worker running threads in the same process:
nothing to install, and the log (not the broker) is what survives a restart. ``redis://``
uses Dramatiq's RedisBroker; workers then run as separate ``opcore worker`` processes.
"""

from __future__ import annotations

import redis
from dramatiq import Broker, Worker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import default_middleware

from jobs.errors import BrokerError

QUEUE = "opcore"
REDIS_NAMESPACE = "opcore"


def make_broker(url: str) -> Broker:
    middleware = [m() for m in default_middleware]
    if url.startswith("memory://"):
        return StubBroker(middleware=middleware, fail_fast_default=False)
    if url.startswith(("redis://", "rediss://")):
        return RedisBroker(url=url, middleware=middleware, namespace=REDIS_NAMESPACE)
    raise BrokerError(f"unsupported broker URL {url!r}: use memory:// or redis://")


def check_broker(broker: Broker) -> None:
    """Fail early, with the reason, when the broker cannot be reached."""
    if isinstance(broker, RedisBroker):
        try:
            broker.client.ping()
        except redis.RedisError as exc:
            raise BrokerError(f"cannot reach Redis: {exc}") from exc


def queue_depth(broker: Broker) -> int | None:
    """Messages waiting in opcore's queue (``None`` if the broker cannot tell)."""
    if isinstance(broker, StubBroker):
        return int(sum(q.qsize() for name, q in broker.queues.items() if name.startswith(QUEUE)))
    if isinstance(broker, RedisBroker):
        try:
            waiting = broker.client.llen(f"{REDIS_NAMESPACE}:{QUEUE}")
            delayed = broker.client.llen(f"{REDIS_NAMESPACE}:{QUEUE}.DQ")
        except redis.RedisError:
            return None
        return int(waiting) + int(delayed)
    return None


def start_worker(broker: Broker, *, threads: int) -> Worker:
    broker.emit_after("process_boot")
    worker = Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    return worker
