"""The pure core of transit-gateway: static GTFS and GTFS-Realtime in, schedule answers out.

- ``feeds.schedule``: service time, calendars, the schedule index of one version, boards, stop
  search, and the codec that turns an index into bytes and back;
- ``feeds.static``: a GTFS archive read with gtfs-kit, validated, built into an index;
- ``feeds.realtime``: GTFS-Realtime decoded once into our own types, checked, merged onto the
  schedule, shaped into overlays, vehicles and alerts.

Nothing here touches the network, the store or a server: no aiohttp, redis, prometheus_client
or ``gateway`` import (an import-linter contract in ``make lint`` holds it), and every instant is
an argument. The only input read from disk is the local file a caller hands to
``feeds.static.reader``; fetching it is ``gateway.ingest``'s job.
"""
