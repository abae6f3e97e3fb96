"""The handler of bench/peers.py's `dq server` workload: it does nothing, so what is
measured is the worker's own cost per job (pickup, finish, bookkeeping)."""

from __future__ import annotations

from dirqueue import Job


def handle(job: Job) -> None:
    """Finish ``job`` by returning at once."""
