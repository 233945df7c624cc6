"""A national-size GTFS feed made from a real one: WMATA's timetable tiled ``copies`` times.

Copy k (0-based) has every id prefixed with ``k:`` (stops, parents, levels, routes, trips,
services, shapes, pathways) and every longitude moved ``0.25 * k`` degrees east, so the copies
neither share ids nor overlap on the map; one agency, one feed_info. 40 copies of the 2026
fixture hold 14.1 M stop_times, about London's size.

    python -m bench.tiler 40            # writes bench/.cache/wmata-x40.zip (reused if present)

Streams line by line (the source is read once per copy, the output deflated at level 1), so
tiling costs seconds and little memory; what is measured is what the gateway does with it.
"""

from __future__ import annotations

import csv
import io
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

from bench.common import DATA, ROOT

SOURCE = DATA / "gtfs" / "wmata-2026.zip"
CACHE = ROOT / "bench" / ".cache"
SHIFT_DEG = 0.25

# Columns holding ids, by file; every one of them gets the copy's prefix.
ID_COLUMNS = {
    "stops.txt": ("stop_id", "parent_station", "level_id"),
    "routes.txt": ("route_id",),
    "trips.txt": ("trip_id", "route_id", "service_id", "shape_id", "block_id"),
    "stop_times.txt": ("trip_id", "stop_id"),
    "calendar.txt": ("service_id",),
    "calendar_dates.txt": ("service_id",),
    "shapes.txt": ("shape_id",),
    "frequencies.txt": ("trip_id",),
    "levels.txt": ("level_id",),
    "pathways.txt": ("pathway_id", "from_stop_id", "to_stop_id"),
    "transfers.txt": ("from_stop_id", "to_stop_id", "from_trip_id", "to_trip_id",
                      "from_route_id", "to_route_id"),
}
LON_COLUMNS = {"stops.txt": "stop_lon", "shapes.txt": "shape_pt_lon"}
ONCE = ("agency.txt", "feed_info.txt")  # the same agency and publisher for every copy


def tiled_path(copies: int) -> Path:
    return CACHE / f"wmata-x{copies}.zip"


def _rows(text: str) -> tuple[list[str], Iterator[list[str]]]:
    reader = csv.reader(io.StringIO(text))
    return next(reader), reader


def _copy(name: str, header: list[str], rows: list[list[str]], k: int) -> Iterator[list[str]]:
    prefix = f"{k}:"
    ids = [i for i, col in enumerate(header) if col in ID_COLUMNS.get(name, ())]
    lon_col = LON_COLUMNS.get(name)
    lon = header.index(lon_col) if lon_col in header else -1
    shift = SHIFT_DEG * k
    for row in rows:
        out = list(row)
        for i in ids:
            if i < len(out) and out[i]:
                out[i] = prefix + out[i]
        if lon >= 0 and out[lon]:
            out[lon] = f"{float(out[lon]) + shift:.6f}"
        yield out


def tile(copies: int, source: Path = SOURCE, out: Path | None = None,
         agency_suffix: str = "") -> Path:
    """The tiled zip (made once, then reused). ``agency_suffix`` is added to the agency's name:
    a second version of the same feed, with other bytes."""
    out = out or tiled_path(copies)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(
            partial, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst:
        for info in src.infolist():
            name = info.filename
            text = src.read(name).decode("utf-8-sig")
            if name in ONCE:
                if name == "agency.txt" and agency_suffix:
                    header, reader = _rows(text)
                    out_rows = [[v + agency_suffix if col == "agency_name" else v
                                 for col, v in zip(header, row, strict=False)]
                                for row in reader]
                    buffer = io.StringIO()
                    csv.writer(buffer, lineterminator="\n").writerows([header, *out_rows])
                    text = buffer.getvalue()
                dst.writestr(name, text)
                continue
            header, reader = _rows(text)
            rows = list(reader)
            with dst.open(name, "w", force_zip64=True) as raw, io.TextIOWrapper(
                    raw, encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(header)
                for k in range(copies):
                    writer.writerows(_copy(name, header, rows, k))
    partial.rename(out)
    return out


def main() -> None:
    copies = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    print(tile(copies))


if __name__ == "__main__":
    main()
