"""The `gpu-rca` command line: a thin dispatcher over the collector, the correlator and the lab."""
