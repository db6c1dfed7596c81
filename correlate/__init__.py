"""gpu-rca correlator: store, ingest, ranking, digest, server."""
