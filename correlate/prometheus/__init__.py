"""Prometheus: windows pulled from a live server around failures (`pull`) and range-query or text
exposition files read into samples (`files`)."""
