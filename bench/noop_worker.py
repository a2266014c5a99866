"""A bare Dramatiq worker process on Redis: the baseline of ``bench.bench_pipeline``.

Configured like ``opcore worker`` (Dramatiq's RedisBroker with its default middleware, a
``Worker`` with the same thread count and timeout) but its one actor does nothing except
count itself done (one Redis ``INCR``), so the benchmark can tell when every job has run.

Run ``python -m bench.noop_worker redis://127.0.0.1:6379/14 --threads 4``; prints ``ready``
on stderr once it consumes, stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

import dramatiq
from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import default_middleware

NAMESPACE = "bench-noop"
QUEUE = "noop"
DONE_KEY = f"{NAMESPACE}:done"


def make_broker(url: str) -> RedisBroker:
    return RedisBroker(url=url, middleware=[m() for m in default_middleware], namespace=NAMESPACE)


def declare_noop(broker: Broker) -> dramatiq.Actor[Any, Any]:
    """The no-op actor (declared the same way by the sender and the workers)."""
    client = broker.client if isinstance(broker, RedisBroker) else None

    def noop(n: int) -> None:
        if client is not None:
            client.incr(DONE_KEY)

    return dramatiq.actor(actor_name="bench.noop", queue_name=QUEUE, broker=broker)(noop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    broker = make_broker(args.url)
    declare_noop(broker)
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=args.threads, worker_timeout=100)
    worker.start()
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print("ready", file=sys.stderr, flush=True)
    try:
        stop.wait()
    finally:
        worker.stop(timeout=10_000)
        broker.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
