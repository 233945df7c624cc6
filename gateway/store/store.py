"""The store adapter, whole: one class joining the record families over one connection.

Every Redis/Valkey key the gateway uses is named in ``gateway.store.names`` and nowhere else;
each family of records has its module (``feed_records``, ``realtime_records``, ``key_records``,
``hackathon_records``, ``job_records``, ``leases``, ``pubsub``) and ``connection`` holds what
they share.
"""

from __future__ import annotations

from gateway.store.feed_records import FeedRecords
from gateway.store.hackathon_records import HackathonRecords
from gateway.store.job_records import JobRecords
from gateway.store.key_records import KeyRecords
from gateway.store.leases import Leases
from gateway.store.pubsub import PubSub
from gateway.store.realtime_records import RealtimeRecords


class Store(FeedRecords, RealtimeRecords, KeyRecords, HackathonRecords, JobRecords, Leases,
            PubSub):
    """Async access to the store. Methods raise StoreUnavailable when the store cannot answer."""
