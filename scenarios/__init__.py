"""Public incident scenarios for the lab, shipped as package data (`*.yaml`)."""
