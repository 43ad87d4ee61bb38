"""Dagster wiring only: definitions, resources, jobs, schedules, sensors, partitions."""
