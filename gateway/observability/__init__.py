"""Prometheus metrics: requests, rate-limit decisions, the store, feed ingestion."""
