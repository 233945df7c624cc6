"""API keys (pure): format, checksum, hashing and the key record.

A key is ``<prefix><43 base62 chars of 32 random bytes><6 base62 chars of CRC32>``, e.g.
``tgw_...`` for developers and ``tgo_...`` for operators. The checksum lets a typo be refused
without a store lookup. Only SHA-256 of the key is stored: keys carry 256 bits of entropy, so a
slow password hash would add latency without adding safety. ``key_id`` (the first 16 hex chars
of that hash) names the record and is what users see in ``keys list``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import asdict, dataclass

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
PREFIXES = {"developer": "tgw_", "operator": "tgo_"}
KINDS = {v: k for k, v in PREFIXES.items()}
BODY_LEN = 43
CHECK_LEN = 6
_BODY_RE = re.compile(f"[{ALPHABET}]{{{BODY_LEN}}}")


def _b62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        out.append(ALPHABET[rem])
    return "".join(reversed(out))


_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # two base62 digits at a time


def _checksum(prefix: str, body: str) -> str:
    value = zlib.crc32((prefix + body).encode())  # < 62**6: three pairs of digits
    high, rest = divmod(value, 62**4)
    mid, low = divmod(rest, 62**2)
    return _PAIRS[high] + _PAIRS[mid] + _PAIRS[low]


def generate_key(kind: str = "developer") -> str:
    prefix = PREFIXES[kind]
    body = _b62(int.from_bytes(secrets.token_bytes(32), "big"), BODY_LEN)
    return prefix + body + _checksum(prefix, body)


def well_formed(key: str) -> bool:
    """Prefix, length, alphabet and checksum: everything that can be checked without the store."""
    prefix = key[:4]
    if prefix not in KINDS or len(key) != 4 + BODY_LEN + CHECK_LEN:
        return False
    body, check = key[4 : 4 + BODY_LEN], key[4 + BODY_LEN :]
    if not _BODY_RE.fullmatch(body) or not check.isascii():
        return False  # compare_digest raises on non-ASCII text: refuse, don't crash
    return hmac.compare_digest(check, _checksum(prefix, body))


def kind_of(key: str) -> str:
    return KINDS[key[:4]]


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str:
    return key_hash(key)[:16]


@dataclass(frozen=True)
class KeyRecord:
    """What the store keeps about a key (never the key itself)."""

    key_id: str
    hash: str
    kind: str
    email: str
    name: str
    tier: str
    created: str
    expires: str  # ISO-8601, "" for never
    revoked: str  # ISO-8601 of revocation, "" when active
    event: str  # hackathon code, "" when none

    def to_store(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_store(cls, raw: dict[str, str]) -> KeyRecord:
        fields = {f: raw.get(f, "") for f in cls.__dataclass_fields__}
        return cls(**fields)

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(self.hash, key_hash(key))

    def public(self) -> dict[str, str]:
        data = self.to_store()
        del data["hash"]
        return data
