"""The store adapter: every Redis/Valkey key the gateway uses is named here and nowhere else.

Layout (all under ``tg:``):

    tg:feeds                          HASH  feed id -> feed config (JSON)
    tg:feed:<id>:version              STR   the static version being served
    tg:feed:<id>:static:<version>     STR   that version's manifest: chunks, bytes, SHA-256
    tg:feed:<id>:static:<version>:<n> STR   its n-th chunk of the encoded index (feeds.schedule
                                            .codec), at most 32 MiB, no hash tag: chunks
                                            spread over Cluster slots
    tg:feed:<id>:stored               ZSET  versions whose chunks are stored, by write time
    tg:feed:<id>:status               STR   static ingest health (JSON)
    tg:feed:<id>:rt:meta              HASH  realtime kind -> fetch/merge health (JSON)
    tg:feed:<id>:rt:stop:<stop_id>    STR   that stop's realtime overlay (feeds.realtime.overlay)
    tg:feed:<id>:rt:trips             HASH  trip instance -> its realtime (trip view)
    tg:feed:<id>:rt:vehicle_positions STR   positions (JSON); rt:alerts likewise
    tg:lease:<name>                   STR   which ingest process polls a feed (PX TTL)
    tg:events                         PUBSUB "feed <id> <version>" on every switch or removal,
                                            "rt <json>" on every realtime change
    tg:{key:<key_id>}                 HASH  API key record (hash tag: one slot per key, so the
                                            rate-limit counters can live beside it on a Cluster)
    tg:keys                           SET   all key ids, for listing
    tg:{key:<key_id>}:gcra            STR   per-minute GCRA state: the TAT in microseconds of
                                            the store's TIME (PX TTL: gone once replenished)
    tg:{key:<key_id>}:month:<YYYYMM>  STR   requests admitted in that UTC month of the process
                                            clock (TTL: to the month's end + 1 day)
    tg:tiers                          HASH  tier name -> {"per_minute", "per_month"} (JSON)
    tg:signup:<client ip>             STR   per-IP signup GCRA state (PX TTL)
    tg:hackathon:<code>               HASH  a hackathon event: tier, expires, expires_at,
                                            max_keys, created, signups
    tg:hackathons                     SET   all event codes, for listing
    tg:jobs                           LIST  ingest jobs asked for by API processes (ids)
    tg:job:<id>                       STR   one job: what to ingest, its state and outcome
                                            (JSON, kept a day)

Feed ids are restricted (``FEED_ID_RE``) so they can never form a hash tag or a wildcard.

On a Cluster every multi-key command, script and transaction stays inside one hash tag: the
only scripts that name several keys are the limiter's, on one API key's ``{key:<key_id>}``
(one call per key there); everything else names one key per command, or reads keys of several
slots with ``mget_nonatomic`` (``gateway.store.connection``).
"""

from __future__ import annotations

import re

FEED_ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
EVENTS_CHANNEL = "tg:events"
FEEDS_KEY = "tg:feeds"
KEYS_KEY = "tg:keys"
TIERS_KEY = "tg:tiers"
HACKATHONS_KEY = "tg:hackathons"
JOBS_KEY = "tg:jobs"


def feed_key(feed_id: str, suffix: str) -> str:
    return f"tg:feed:{feed_id}:{suffix}"


def job_key(job_id: str) -> str:
    return f"tg:job:{job_id}"


def lease_key(name: str) -> str:
    return f"tg:lease:{name}"


def key_record_key(key_id: str) -> str:
    return f"tg:{{key:{key_id}}}"


# One API key's counters share its record's hash tag: one Cluster slot, one script call.
def key_gcra_key(key_id: str) -> str:
    return f"tg:{{key:{key_id}}}:gcra"


def key_month_key(key_id: str, month: str) -> str:
    return f"tg:{{key:{key_id}}}:month:{month}"


def key_held_key(key_id: str) -> str:
    """Requests of the key counted ahead as reserves of processes (``gateway.access.limiter``)."""
    return f"tg:{{key:{key_id}}}:held"


def signup_ip_key(ip: str) -> str:
    return f"tg:signup:{ip}"


def hackathon_key(code: str) -> str:
    return f"tg:hackathon:{code}"
