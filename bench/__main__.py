"""Run every benchmark and print one table (ratios against baselines measured in this run)."""

from __future__ import annotations

import sys

from bench import ingest, keys, load, realtime
from bench.common import print_table


def main() -> None:
    if sys.argv[1:] == ["load"]:  # python -m bench load: only the load benchmark
        print("load benchmark (ceiling vs keyed departures, 3 interleaved rounds)...",
              file=sys.stderr)
        print_table(load.run())
        return
    rows = []
    print("ingest benchmark (5 interleaved rounds)...", file=sys.stderr)
    rows += ingest.run()
    print("realtime benchmarks (interleaved rounds)...", file=sys.stderr)
    rows += realtime.run()
    print("keys benchmark (keyed vs unkeyed departures, 5 interleaved rounds)...",
          file=sys.stderr)
    rows += keys.run()
    print("load benchmark (ceiling vs keyed departures, 3 interleaved rounds)...",
          file=sys.stderr)
    rows += load.run()
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
