"""``opcore export``, ``opcore import`` and ``opcore memory``: portability and the recall
index, from the terminal."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bot import render
from config import Settings
from store import open_store
from store.archive import export_archive, import_archive
from store.memory import open_memory


def add_commands(sub: Any) -> None:
    export = sub.add_parser(
        "export", help="write events, facts and memories to a portable JSON Lines archive"
    )
    export.add_argument("file", type=Path)
    export.set_defaults(func=cmd_export)
    load = sub.add_parser(
        "import", help="load an archive into an empty database and rebuild recall from it"
    )
    load.add_argument("file", type=Path)
    load.set_defaults(func=cmd_import)
    memory = sub.add_parser("memory", help="the recall index: status, or reindex")
    memory.add_argument(
        "action",
        choices=("status", "reindex"),
        help="reindex: rebuild the index (after changing OPCORE_EMBEDDINGS or the model)",
    )
    memory.set_defaults(func=cmd_memory)


def secrets_of(settings: Settings) -> list[str]:
    """Every configured secret value, which an export must never contain."""
    values = [getattr(settings, name) for name in type(settings).model_fields]
    return [
        v.get_secret_value() for v in values if isinstance(v, SecretStr) and v.get_secret_value()
    ]


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings.resolved_database_url)
    try:
        summary = export_archive(
            store, args.file, secrets=secrets_of(settings), workspace=settings.workspace
        )
    finally:
        store.close()
    counts = ", ".join(f"{n} {kind}s" for kind, n in summary.counts.items())
    print(f"exported {counts} (schema {summary.schema}) to {summary.path}")
    return 0


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings.resolved_database_url)
    try:
        summary = import_archive(store, args.file)
        memory = open_memory(settings, store)
        indexed = memory.reindex()
        memory.index.close()
    finally:
        store.close()
    counts = ", ".join(f"{n} {kind}s" for kind, n in summary.counts.items())
    print(f"imported {counts} from {summary.path}; recall index rebuilt ({indexed} memories)")
    return 0


def cmd_memory(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings.resolved_database_url)
    try:
        memory = open_memory(settings, store)
        try:
            if args.action == "reindex":
                count = memory.reindex()
                print(f"reindexed {count} memories with {memory.embedder.model or 'keywords only'}")
            print(render.memory_status(memory.status()))
        finally:
            memory.index.close()
    finally:
        store.close()
    return 0
