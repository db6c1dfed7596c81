"""Performance benchmarks (Contract 8): `python -m benchmarks NAME [--json]` from the repo root."""
