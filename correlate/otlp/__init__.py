"""OTLP decoding: protobuf on the wire (`wire`), OTLP JSON lines (`json_rows`), rows for the store (`rows`,
`decode`) and OTLP files (`files`)."""
