"""Examples that show how a service wires gpu-rca in (not installed with the package)."""
