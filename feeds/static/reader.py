"""Reading a GTFS source with gtfs-kit: the one place that calls ``gtfs_kit.read_feed``.

gtfs-kit reads each table with ``pd.read_csv(f, dtype=constants.DTYPES[table], ...)``, so the
declared dtypes are where memory is decided. A national feed has tens of millions of
stop_times rows over a few hundred thousand trips, a hundred thousand stops and a few thousand
distinct times: read as strings, that is one Python object per cell (4 GB for 14 M rows); read
as categories, it is one small integer code per cell and each distinct value once. So the
repetitive string columns of stop_times, trips and shapes are declared ``category`` here, the
small flags ``category`` too (codes of one byte), and the distance columns nobody here uses
``float32``; columns gtfs-kit does not know (``continuous_pickup``, Flex windows, agency
extras) default to ``category`` in the two big tables instead of being inferred.

Category values stay the strings of the file: pandas would turn the categories of a column
whose values all look numeric into numbers (stop ``007`` becomes 7, ``1.0`` and ``1`` merge),
which the ``feeds.static`` code, comparing ids as strings, must not see. ``read_gtfs`` turns
that inference off for its own reads (``_strings_only``) and checks the result.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gtfs_kit
import gtfs_kit.constants as _gk_constants
import pandas as pd
from pandas.core.arrays.categorical import Categorical

CATEGORY = "category"

# gtfs-kit declares a few integer columns as Int16, but real feeds exceed 32767 (HSL's
# frequencies.txt has headway_secs 50400), and read_feed then fails on a valid feed. Widening
# the declared dtype is the smallest fix at the edge; nothing else in gtfs-kit depends on it.
for _table in _gk_constants.DTYPES.values():
    for _column, _dtype in list(_table.items()):
        if str(_dtype) == "Int16":
            _table[_column] = "Int32"

COMPACT: dict[str, dict[str, str]] = {
    "stop_times": {
        "trip_id": CATEGORY, "stop_id": CATEGORY, "arrival_time": CATEGORY,
        "departure_time": CATEGORY, "stop_headsign": CATEGORY, "pickup_type": CATEGORY,
        "drop_off_type": CATEGORY, "timepoint": CATEGORY, "shape_dist_traveled": "float32",
    },
    "trips": {
        "route_id": CATEGORY, "service_id": CATEGORY, "trip_headsign": CATEGORY,
        "trip_short_name": CATEGORY, "block_id": CATEGORY, "shape_id": CATEGORY,
    },
    "shapes": {"shape_id": CATEGORY, "shape_dist_traveled": "float32"},
}
"""The dtypes declared over gtfs-kit's, by table."""
UNKNOWN_COLUMNS = {"stop_times": CATEGORY, "shapes": CATEGORY}
"""The dtype of a column gtfs-kit does not declare, in the tables where size matters."""
STRING_CATEGORIES = {(t, c) for t, columns in COMPACT.items() for c, d in columns.items()
                     if d == CATEGORY and (t, c) not in {("stop_times", "pickup_type"),
                                                        ("stop_times", "drop_off_type"),
                                                        ("stop_times", "timepoint")}}
"""The category columns whose values are identifiers or text: checked after each read."""

for _name, _columns in COMPACT.items():
    _declared = dict(_gk_constants.DTYPES[_name])
    _declared.update(_columns)
    _default = UNKNOWN_COLUMNS.get(_name)
    _gk_constants.DTYPES[_name] = (defaultdict(lambda d=_default: d, _declared)  # type: ignore[misc]
                                   if _default else _declared)

_reading = threading.local()
_INFER_ATTRIBUTE = "_maybe_convert_categories"


def _install_strings_only() -> None:
    """Wrap pandas' category inference (``Categorical._maybe_convert_categories``, which
    ``read_csv`` calls for every category column) so that it does nothing in a thread inside
    ``read_gtfs``; everywhere else it is pandas' own. Once per process."""
    current = Categorical.__dict__.get(_INFER_ATTRIBUTE)
    if not isinstance(current, staticmethod) or getattr(current.__func__, "_tg_wrapped", False):
        return  # absent (another pandas: the check after the read still guards) or done
    infer: Callable[..., Any] = current.__func__

    def strings_in_our_reads(*args: Any, **kwargs: Any) -> Any:
        if getattr(_reading, "active", False):
            return None  # "no conversion applies": the categories stay the file's strings
        return infer(*args, **kwargs)

    strings_in_our_reads._tg_wrapped = True  # type: ignore[attr-defined]
    setattr(Categorical, _INFER_ATTRIBUTE, staticmethod(strings_in_our_reads))


_install_strings_only()


def _check_string_categories(feed: Any) -> None:
    for table, column in sorted(STRING_CATEGORIES):
        df = getattr(feed, table, None)
        if df is None or column not in df.columns:
            continue
        dtype = df[column].dtype
        if isinstance(dtype, pd.CategoricalDtype) and len(dtype.categories) and not (
                pd.api.types.is_string_dtype(dtype.categories.dtype)):
            raise TypeError(
                f"pandas read {table}.{column} as {dtype.categories.dtype} categories, not the "
                f"file's strings: feeds.static.reader no longer stops its category inference "
                f"on this pandas {pd.__version__}")


def read_gtfs(path: Path) -> Any:
    """Read a GTFS zip or directory into a gtfs-kit Feed. Exceptions propagate to the caller.

    The repetitive columns of stop_times, trips and shapes are pandas categories of strings
    (``COMPACT``): use ``.cat.codes`` and ``.cat.categories``, not the values row by row."""
    _reading.active = True
    try:
        feed = gtfs_kit.read_feed(path, dist_units="km")
    finally:
        _reading.active = False
    _check_string_categories(feed)
    return feed
