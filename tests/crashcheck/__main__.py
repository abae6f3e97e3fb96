"""``python -m crashcheck [--sample] [--seed N] [--limit N] [--only TEXT]``.

Traces every operation of :mod:`crashcheck._scenarios`, checks the crash states of each,
prints a report, and ends with exactly one line ``N states checked, M violations``;
exits 1 when M > 0. ``--sample`` bounds the states per crash point (sampled with the
seed) to stay well under two minutes. ``--strace`` instead compares, for each
operation, the calls recorded with those strace sees.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

from ._check import Tally, check_trace
from ._scenarios import SCENARIOS, trace

#: States per crash point and model: enumerated below, sampled above.
SAMPLE_LIMIT = 24
FULL_LIMIT = 4096


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crashcheck", description=__doc__)
    parser.add_argument("--sample", action="store_true", help="a bounded sample")
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--limit", type=int, default=None,
                        help="states per crash point and model before sampling")
    parser.add_argument("--only", default=None, help="only operations whose name has this")
    parser.add_argument("--show", type=int, default=10, help="violations shown in full")
    parser.add_argument("--strace", action="store_true",
                        help="compare the recorder with strace, check nothing")
    args = parser.parse_args(argv)
    scenarios = [s for s in SCENARIOS if args.only is None or args.only in s.name]
    if args.strace:
        from ._strace import compare  # noqa: PLC0415 - only for this mode
        return compare(scenarios)
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
          f" promise (durable=False): {len(tally.unpromised)}; {time.monotonic() - started:.1f} s")
    print(f"{tally.checked} states checked, {len(tally.violations)} violations")
    return 1 if tally.violations else 0


if __name__ == "__main__":
    sys.exit(main())
