"""Performance benchmarks (docs/contracts.md §8): `python -m benchmarks NAME [--json]` from the repo root."""
