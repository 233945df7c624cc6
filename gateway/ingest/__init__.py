"""Getting feeds in: fetchers (with the SSRF guard), static publishing, realtime pollers."""
