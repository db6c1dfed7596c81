"""gpu-rca lab: simulated GPUs, DDColor workload model, fault injection."""
