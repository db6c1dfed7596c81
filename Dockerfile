# gpu-rca: the correlator (`serve`), the DCGM-compatible exporter and the lab, in one image.
#   docker build -t gpu-rca:0.1.0 .
#   docker run --rm gpu-rca:0.1.0 --help
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GPU_RCA_DB=/data/gpu-rca.duckdb

WORKDIR /src
COPY . /src
RUN pip install ".[all]" \
    && rm -rf /src \
    && useradd --system --uid 10001 --home-dir /data --no-create-home gpurca \
    && mkdir -p /data \
    && chown gpurca:gpurca /data

# Volumes are created from the image's directory, so /data starts out owned by gpurca.
VOLUME ["/data"]
WORKDIR /data
USER gpurca

# 4318: `gpu-rca serve` (OTLP/HTTP, webhook, pages); 9400: `gpu-rca exporter`.
EXPOSE 4318 9400
ENTRYPOINT ["gpu-rca"]
CMD ["--help"]
