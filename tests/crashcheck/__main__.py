"""``python -m crashcheck [--sample] [--seed N] [--limit N] [--only TEXT]``.

Traces every operation of :mod:`crashcheck._scenarios`, checks the crash states of each,
prints a report, and ends with exactly one line ``N states checked, M violations``;
exits 1 when M > 0. ``--sample`` bounds the states per crash point (sampled with the
seed) to stay well under two minutes. ``--record NAME DIR`` records one operation
in this process and prints the calls the recorder saw, between two marker calls
(``stat`` of ``/crashcheck-begin`` and ``/crashcheck-end``): run it under ``strace -f
-e trace=file,desc`` to compare the two (docs/durability.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
import time

from ._check import Tally, check_trace
from ._scenarios import SCENARIOS, record_here, trace

#: States per crash point and model: enumerated below, sampled above.
SAMPLE_LIMIT = 24
FULL_LIMIT = 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crashcheck", description=__doc__)
    parser.add_argument("--sample", action="store_true", help="a bounded sample")
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--limit", type=int, default=None,
                        help="states per crash point and model before sampling")
    parser.add_argument("--only", default=None, help="only operations whose name has this")
    parser.add_argument("--show", type=int, default=10, help="violations shown in full")
    parser.add_argument("--record", nargs=2, metavar=("NAME", "DIR"),
                        help="record one operation here, print its calls, check nothing")
    args = parser.parse_args(argv)
    # The engine's warnings (locks broken, corrupt jobs moved aside) are what a
    # recovery does; the report says what matters.
    logging.getLogger("dirqueue").setLevel(logging.CRITICAL)
    if args.record:
        return _record(*args.record)
    scenarios = [s for s in SCENARIOS if args.only is None or args.only in s.name]
    limit = args.limit or (SAMPLE_LIMIT if args.sample else FULL_LIMIT)
    rng = random.Random(args.seed)
    tally = Tally()
    started = time.monotonic()
    print(f"crashcheck: models ordered and weak, {limit} states per crash point at most,"
          f" seed {args.seed}")
    for scenario in scenarios:
        with tempfile.TemporaryDirectory(prefix="crashcheck.trace.") as tmp:
            recorded = trace(scenario, os.path.join(tmp, "q"))
        before = (tally.generated, tally.checked, len(tally.violations),
                  len(tally.unpromised))
        check_trace(recorded, tally, limit, rng)
        print(f"  {scenario.name:40} {len(recorded.events):3} events "
              f"{tally.generated - before[0]:6} states {tally.checked - before[1]:5} checked "
              f"{len(tally.violations) - before[2]:4} violations"
              + (f" ({len(tally.unpromised) - before[3]} outside the promise)"
                 if not recorded.promised else ""))
        shown = tally.violations[before[2]:][: args.show]
        for violation in shown:
            print(violation.describe(recorded.events))
    print(f"operations traced: {tally.traced} ({tally.events} events); states generated:"
          f" {tally.generated}; distinct states checked: {tally.checked}; outside the"
          f" promise (durable=False): {len(tally.unpromised)}; a lock that lost its contents"
          f" waited out: {tally.waited}; {time.monotonic() - started:.1f} s")
    print(f"{tally.checked} states checked, {len(tally.violations)} violations")
    return 1 if tally.violations else 0


def _record(name: str, directory: str) -> int:
    scenario = next(s for s in SCENARIOS if s.name == name)
    recorded = record_here(scenario, directory)
    for call, what in recorded.calls:
        print(call, what)
    print(f"{len(recorded.calls)} calls, {len(recorded.events)} events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
