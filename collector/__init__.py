"""gpu-rca collector: GPU telemetry on every inference span (see README)."""
