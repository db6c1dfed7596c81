"""Measured ranking accuracy (`gpu-rca bench ranking`): where the lab and the correlator meet."""
