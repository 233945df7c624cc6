"""Static GTFS and GTFS-Realtime ingestion, and the pure schedule core.

Modules here import nothing from aiohttp, redis or prometheus_client, with one exception:
``static_source`` (fetching bytes over HTTP) which is the I/O edge of static ingest.
"""
