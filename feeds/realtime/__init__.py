"""GTFS-Realtime: decode once into our own types, validate, merge onto the schedule (pure)."""
