"""Run benchmarks and print one table (ratios against baselines measured in the same run).

    python -m bench                      every benchmark (make bench)
    python -m bench ingest realtime      only those groups (ingest, realtime, keys, load, cost)
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import cost, ingest, keys, load, realtime, scale, search
from bench.common import Row, print_table

GROUPS: dict[str, tuple[str, Callable[[], list[Row]]]] = {
    "ingest": ("ingest benchmark (5 interleaved rounds)", ingest.run),
    "realtime": ("realtime benchmarks (interleaved rounds)", realtime.run),
    "keys": ("keys benchmark (keyed vs unkeyed departures, 5 interleaved rounds)", keys.run),
    "load": ("load benchmark (ceiling vs keyed departures, 7 interleaved rounds of 3 s)", load.run),
    "cost": ("cost benchmark (instructions per request under callgrind)", cost.run),
    "search": ("stop search benchmark (87,000 stops, new vs old, 3 rounds)", search.run),
    "scale": ("national scale (40-copy WMATA, 14.1 M stop_times, vs 1 copy)", scale.run),
}


def main() -> None:
    chosen = sys.argv[1:] or list(GROUPS)
    unknown = [g for g in chosen if g not in GROUPS]
    if unknown:
        sys.exit(f"unknown benchmark group(s) {unknown}; choose from {list(GROUPS)}")
    rows: list[Row] = []
    for name in chosen:
        title, run = GROUPS[name]
        print(f"{title}...", file=sys.stderr)
        rows += run()
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
