"""Reading a GTFS source with gtfs-kit: the one place that calls ``gtfs_kit.read_feed``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gtfs_kit
import gtfs_kit.constants as _gk_constants

# gtfs-kit declares a few integer columns as Int16, but real feeds exceed 32767 (HSL's
# frequencies.txt has headway_secs 50400), and read_feed then fails on a valid feed. Widening
# the declared dtype is the smallest fix at the edge; nothing else in gtfs-kit depends on it.
for _table in _gk_constants.DTYPES.values():
    for _column, _dtype in list(_table.items()):
        if str(_dtype) == "Int16":
            _table[_column] = "Int32"


def read_gtfs(path: Path) -> Any:
    """Read a GTFS zip or directory into a gtfs-kit Feed. Exceptions propagate to the caller."""
    return gtfs_kit.read_feed(path, dist_units="km")
