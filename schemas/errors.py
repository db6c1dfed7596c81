"""The project's few exception types. Lower-library errors are translated into these at the boundary."""

from __future__ import annotations


class GpuRcaError(Exception):
    """Base of every error gpu-rca raises on purpose; the CLI prints it as one `Error: …` line."""

    exit_code = 1


class UsageError(GpuRcaError):
    """The command line or a configuration value is wrong (exit code 2)."""

    exit_code = 2


class InputError(GpuRcaError):
    """A file or payload could not be read as the telemetry it claims to be."""


class EmptyWindowError(InputError):
    """The window holds no inference spans (nothing to analyse yet, or the wrong window)."""


class StoreError(GpuRcaError):
    """The database is missing, locked by another process, corrupted or not a gpu-rca store."""


class StoreLockedError(StoreError):
    """Another process holds the database (DuckDB lets one process write a file); the CLI adds the advice
    that fits the verb."""
