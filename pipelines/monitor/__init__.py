"""Watching the screening: each run's monitoring point (screening), the runs as trends
(trends), radiologists' reads against the flags (feedback)."""
