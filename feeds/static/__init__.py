"""Static GTFS: read with gtfs-kit, validate, build the schedule index (pure, CPU only)."""
