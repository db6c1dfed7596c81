"""What every telemetry-file reader shares: opening a file (decompression, size cap, progress) and the
options and tallies of one ingest run. The format readers live with their concept (`otlp.files`,
`prometheus.files`, `kernel_log.files`, `ingest.loguru_files`); `ingest` detects formats and dispatches."""
