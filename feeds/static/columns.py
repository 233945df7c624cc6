"""Columns of the tables ``reader`` produced, as numpy arrays, one distinct value at a time.

The big columns arrive as pandas categories (``reader.COMPACT``): integer codes per row and
each distinct value once. Everything here works on the distinct values and then takes by the
codes, so a lookup, a parse or a blank check over 14 M rows costs as much as over the few
thousand (or few hundred thousand) values they repeat. Other columns (small tables, or a feed
whose header gtfs-kit did not match) are factorized first and take the same path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

I32 = npt.NDArray[np.int32]
Codes = npt.NDArray[np.signedinteger[Any]]


def codes_and_values(series: pd.Series) -> tuple[Codes, pd.Index]:
    """Per-row codes into the distinct values (-1 where missing), and the values."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        categorical = series.array
        return categorical.codes, categorical.categories
    codes, uniques = pd.factorize(series)
    return codes, pd.Index(uniques)


def by_value(codes: Codes, table: np.ndarray[Any, Any], missing: Any) -> Any:
    """Per row, ``table[code]`` (one entry per distinct value), ``missing`` where the code is
    -1."""
    full = np.empty(len(table) + 1, dtype=table.dtype)
    full[:-1] = table
    full[-1] = missing  # code -1 picks the last entry
    return full[codes]


def positions(ids: Sequence[str] | pd.Index, values: pd.Series) -> I32:
    """Positions of ``values`` in ``ids`` (unique), -1 where absent or missing."""
    codes, distinct = codes_and_values(values)
    found = pd.Index(ids).get_indexer(distinct) if len(distinct) else np.zeros(0, np.intp)
    result: I32 = by_value(codes, found.astype(np.int32), -1)
    return result


def int_column(df: pd.DataFrame, column: str, default: int, dtype: Any) -> Any:
    """An integer column; ``default`` where absent, missing or not a number."""
    if column not in df.columns:
        return np.full(len(df), default, dtype=dtype)
    series = df[column]
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes, values = codes_and_values(series)
        numbers = pd.to_numeric(pd.Series(values.tolist(), dtype=object),
                                errors="coerce").fillna(default).to_numpy(np.float64)
        return by_value(codes, numbers.astype(dtype), default)
    if pd.api.types.is_integer_dtype(series.dtype):  # Int32 as declared: one pass, no copies
        return series.to_numpy(dtype=dtype, na_value=default)
    return pd.to_numeric(series, errors="coerce").fillna(default).to_numpy(dtype=dtype)


def blank(series: pd.Series) -> npt.NDArray[np.bool_]:
    """Missing or whitespace-only, per row."""
    missing: npt.NDArray[np.bool_] = series.isna().to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(series.dtype):
        return missing
    codes, values = codes_and_values(series)
    empty = np.array([not str(v).strip() for v in values.tolist()], dtype=bool)
    if empty.any():
        missing |= by_value(codes, empty, True)
    return missing


def opt_str(value: Any) -> str | None:
    """A cell as text: None when missing or whitespace-only."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    text = str(value)
    return text if text.strip() else None


def str_list(df: pd.DataFrame, column: str,
             convert: Callable[[Any], str | None] = opt_str) -> list[str | None]:
    """A text column as a list (``convert`` of each distinct value); None where absent."""
    if column not in df.columns:
        return [None] * len(df)
    series = df[column]
    codes, values = codes_and_values(series)
    texts = np.array([convert(v) for v in values.tolist()] or [None], dtype=object)
    texts = texts[:len(values)]
    result: list[str | None] = by_value(codes, texts, None).tolist()
    return result
