# webhook-gateway: the same install as README.md, run as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 gateway
WORKDIR /app

COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY normalizers ./normalizers
COPY destinations ./destinations
RUN pip install .

COPY config.yaml ./
USER gateway
# Webhooks on 8000; the console and /metrics on 9180, a port of their own: publish it only
# where Prometheus and operators reach it (docs/operations.md, "The operator listener").
# The variable wins over the config's operator.listen: unset it (-e OPERATOR_LISTEN=) to
# use the config's, e.g. `public` with a metrics_token.
ENV OPERATOR_LISTEN=0.0.0.0:9180
EXPOSE 8000 9180
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
CMD ["webhook-gateway", "serve", "--host", "0.0.0.0", "--port", "8000", "--config", "/app/config.yaml"]
