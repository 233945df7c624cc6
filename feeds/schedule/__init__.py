"""The schedule core (pure): service time, calendars, the schedule index, boards, stop search."""
