"""Every error the gateway raises on purpose, and what each one means to a client.

    GatewayError                 base; `status` is the HTTP answer, `reason` the log outcome
    +-- ConfigError              config.yaml is wrong (names file, line, key path); not HTTP
    +-- RequestRejected          the request is the client's mistake: never retried usefully
    |   +-- UnknownSource        404  no source with that name is configured
    |   +-- MethodNotAllowed     405  webhooks are POSTs
    |   +-- BodyTooLarge         413  over the source's max_body (checked while reading)
    |   +-- SignatureError       401  missing or wrong signature, stale or future timestamp
    |   +-- PayloadError         400  the body or headers carry no usable delivery id
    +-- RateLimited              429  over a collect source's rate limit; retry after Retry-After
    +-- StoreUnavailable         503  Redis did not answer in time; the vendor should retry

The mapping to status codes lives here and nowhere else: the HTTP layer reads `status`,
`reason` and `headers` off the exception. Messages never contain secrets or bodies.
"""

from __future__ import annotations


class GatewayError(Exception):
    status: int = 500
    reason: str = "internal_error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail

    @property
    def headers(self) -> dict[str, str]:
        return {}


class ConfigError(GatewayError):
    """A config file problem, located as `file:line: key.path: message`."""

    def __init__(self, message: str, file: str = "", line: int | None = None, path: str = ""):
        self.file, self.line, self.path, self.message = file, line, path, message
        where = file
        if line is not None:
            where = f"{file}:{line}" if file else f"line {line}"
        parts = [p for p in (where, path) if p]
        super().__init__(": ".join([*parts, message]))


class RequestRejected(GatewayError):
    status = 400
    reason = "rejected"


class UnknownSource(RequestRejected):
    status = 404
    reason = "unknown_source"


class MethodNotAllowed(RequestRejected):
    status = 405
    reason = "method_not_allowed"

    @property
    def headers(self) -> dict[str, str]:
        return {"allow": "POST"}


class BodyTooLarge(RequestRejected):
    status = 413
    reason = "body_too_large"


class SignatureError(RequestRejected):
    status = 401
    reason = "bad_signature"


# For when the signature's header, form and timestamp were all found right: the digest is
# what differs, so the secret (or, for a scheme written in config, what is signed) is wrong.
NO_MATCH = (
    "no signature matched: the signature is there and readable, but none of this source's "
    "secrets gives it; check that the secret is the one the vendor signs with (and, while "
    "rotating, that both are listed)"
)


class Unauthorized(RequestRejected):
    """No credential, or one this gateway does not know (a collect write key)."""

    status = 401
    reason = "unauthorized"


class PayloadError(RequestRejected):
    status = 400
    reason = "bad_payload"


class RateLimited(GatewayError):
    """Over a rate limit of the collect API (per client IP or per write key)."""

    status = 429
    reason = "rate_limited"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many requests; retry in {retry_after} s")
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after)}


class StoreUnavailable(GatewayError):
    status = 503
    reason = "store_unavailable"
    retry_after = 5

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after)}
