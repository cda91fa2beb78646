"""webhook-gateway: verify, dedupe and durably accept vendor webhooks; normalize and deliver."""

__version__ = "0.1.0"
