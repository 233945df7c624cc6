"""Which of many strings contain a given string, without looking at each one (pure).

``Substrings(texts)`` sorts every suffix of every text once (a generalized suffix array over
their UTF-8 bytes, built with numpy by prefix doubling); the suffixes that start with a given
string then form one contiguous run of that array, found by two binary searches, and the
texts they belong to are a slice of a parallel array. A lookup costs O(log of the total
length) comparisons in Python plus numpy work in proportion to the occurrences found, however
many texts there are.

UTF-8 is self-synchronizing, so a string's encoding occurs in a text's encoding exactly where
the string occurs in the text; lone surrogates are encoded with ``surrogatepass`` so that
every ``str`` has an encoding.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]

_PACK = 7  # bytes of each suffix sorted at once in the first pass (9 bits each in an int64)
MAX_BYTES = 2**30  # int32 positions, with room for the doubling offsets


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _owners(lengths: I64, m: int) -> I32:
    """For each of the ``m`` bytes of the texts end to end, the position of its text among
    those that are not empty (what ``np.repeat`` gives, without holding the GIL: a cumsum)."""
    starts = (np.cumsum(lengths) - lengths)[lengths > 0]
    marks = np.zeros(m, dtype=np.int32)
    marks[starts] = 1
    owners: I32 = np.cumsum(marks, dtype=np.int32) - 1
    return owners


def _owner_ends(lengths: I64, m: int) -> I32:
    ends: I32 = np.cumsum(lengths)[lengths > 0].astype(np.int32)[_owners(lengths, m)]
    return ends


def suffix_array(text: bytes, lengths: I64) -> I32:
    """Positions of ``text`` (the texts of ``lengths`` bytes each, end to end) in the order of
    the suffixes they start, each suffix ending where its own text ends (a shorter suffix
    before any it is a prefix of). Equal suffixes come in no particular order.

    Prefix doubling: sort by the first ``_PACK`` bytes, then repeatedly by (rank of the first
    h bytes, rank of the h bytes after them), re-sorting only the groups still tied that have
    a member longer than h. Ranks are the start of a suffix's group in the array, so a group
    is refined in its own slots and the ranks of the others stay valid."""
    m = len(text)
    if m >= MAX_BYTES:
        raise ValueError(f"{m} bytes of text: at most {MAX_BYTES} can be indexed")
    if m == 0:
        return np.zeros(0, dtype=np.int32)
    # bytes left in its own text from each position
    left = _owner_ends(lengths, m) - np.arange(m, dtype=np.int32)
    byte = np.frombuffer(text, dtype=np.uint8).astype(np.int64) + 1  # 0: past the end
    key = np.zeros(m, dtype=np.int64)
    for j in range(min(_PACK, m)):
        shifted = np.zeros(m, dtype=np.int64)
        shifted[: m - j] = byte[j:]
        shifted[left <= j] = 0
        key |= shifted << (9 * (_PACK - 1 - j))
    sa = np.argsort(key).astype(np.int32)
    key = key[sa]
    slots = np.arange(m, dtype=np.int32)  # the array slots still being sorted
    first, number = _groups(key)
    group = np.flatnonzero(first).astype(np.int32)[number]  # rank of each slot's suffix
    rank = np.empty(m, dtype=np.int32)
    rank[sa] = group
    pos, rest = sa.copy(), left[sa]  # of the slots being sorted
    h = _PACK
    while True:
        starts = np.flatnonzero(first)
        long = np.zeros(len(starts), dtype=bool)  # groups with a member longer than h
        long[number[rest > h]] = True
        tied = long & (np.diff(starts, append=len(pos)) > 1)
        if not tied.any():
            return sa
        keep = tied[number]
        slots, pos, rest, group = slots[keep], pos[keep], rest[keep], group[keep]
        second = rank[np.minimum(pos + h, m - 1)].astype(np.int64) + 1
        second[rest <= h] = 0
        key = group.astype(np.int64) * (m + 1) + second
        order = np.argsort(key)
        pos, rest, key = pos[order], rest[order], key[order]
        sa[slots] = pos
        first, number = _groups(key)
        group = slots[np.flatnonzero(first)][number]
        rank[pos] = group
        h *= 2


def _groups(key: I64) -> tuple[npt.NDArray[np.int8], I32]:
    """For sorted keys: which start a run of equal keys, and the number of each one's run.
    (Only numpy steps that release the GIL: no np.repeat, accumulate of int64 or reduceat.)"""
    first = np.empty(len(key), dtype=np.int8)
    first[0] = 1
    np.not_equal(key[1:], key[:-1], out=first[1:], casting="unsafe")
    number: I32 = np.cumsum(first, dtype=np.int32) - 1
    return first, number


class Substrings:
    """The texts given, in their order (numbered from 0), searchable by any substring."""

    __slots__ = ("_bytes", "_end", "_ends", "_entry", "_sa", "_suffix_entry", "_suffix_start",
                 "count")

    def __init__(self, texts: Iterable[str]) -> None:
        encoded = [encode(t) for t in texts]
        self.count = len(encoded)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        self._bytes = b"".join(encoded)
        self._sa = suffix_array(self._bytes, lengths)
        owner = np.flatnonzero(lengths > 0).astype(np.int32)[_owners(lengths, len(self._bytes))]
        self._entry: I32 = owner[self._sa]  # the text of each suffix
        self._end = np.cumsum(lengths).astype(np.int32)
        # memoryviews for the binary search: an item is a Python int, without numpy's overhead
        self._suffix_start = memoryview(self._sa.data) if len(self._sa) else memoryview(b"")
        self._suffix_entry = memoryview(self._entry.data) if len(self._sa) else memoryview(b"")
        self._ends = memoryview(self._end.data) if len(self._end) else memoryview(b"")

    @property
    def nbytes(self) -> int:
        return len(self._bytes) + self._sa.nbytes + self._entry.nbytes + self._end.nbytes

    def sorted_order(self) -> I32:
        """The texts in sorted order (of code points: UTF-8 keeps it), read off the suffix array,
        where each text is the suffix starting at its first byte (sorted in numpy, with the GIL
        released, where ``sorted`` on the strings would hold it throughout). Equal texts come in
        no particular order."""
        starts = np.concatenate(([0], self._end[:-1])).astype(np.int32)
        empty = starts == self._end  # no suffix of their own: first
        whole = np.zeros(len(self._bytes), dtype=bool)
        whole[starts[~empty]] = True
        order: I32 = np.concatenate(
            (np.flatnonzero(empty).astype(np.int32), self._entry[whole[self._sa]]))
        return order

    def occurrences(self, part: str) -> I32:
        """The texts containing ``part`` (non-empty), once per occurrence, in no order."""
        needle = encode(part)
        size = len(needle)
        raw, start, entry, end = self._bytes, self._suffix_start, self._suffix_entry, self._ends

        def prefix(k: int) -> bytes:  # the first ``size`` bytes of the k-th suffix
            p = start[k]
            return raw[p : min(p + size, end[entry[k]])]

        every = range(len(self._sa))
        lo = bisect_left(every, needle, key=prefix)
        hi = bisect_right(every, needle, lo=lo, key=prefix)
        return self._entry[lo:hi]

    def containing(self, part: str) -> Mask:
        """Which texts contain ``part`` (every one, for an empty ``part``)."""
        if not part:
            return np.ones(self.count, dtype=bool)
        mask = np.zeros(self.count, dtype=bool)
        mask[self.occurrences(part)] = True
        return mask
