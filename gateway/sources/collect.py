"""`type: collect`: a first-party collection source fed by Segment's own clients.

Its messages arrive at /v1/track, /v1/batch, ... (gateway/collect.py), authenticated by
a write key (public: every page shows it), not at /webhooks/{name}. Each message is
stored as one raw delivery of this source, so the worker, the tracking plan, the
quarantine, replay and the delivery log treat it like any webhook.
"""

from __future__ import annotations

import hashlib
import ipaddress

from ..config import ByteSize, Secret, SourceConfig, size
from ..errors import ConfigError, UnknownSource
from ..ratelimit import Limit, limit
from .base import Headers, Source, register


class CollectConfig(SourceConfig, tag="collect", kw_only=True):
    secrets: list[Secret] = []
    """Not used: collect sources take `write_keys`."""
    write_keys: list[Secret] = []
    """The write keys whose messages belong to this source (analytics.js, analytics-node,
    analytics-python send one); several while rotating."""
    origins: list[str] = []
    """Site origins allowed to send from a browser (CORS), e.g. https://www.example.com."""
    trusted_proxies: list[str] = []
    """Addresses or networks (CIDR) of your own proxies/load balancers: only from these is
    X-Forwarded-For believed for `context.ip`."""
    max_body: ByteSize = size("500KB")
    """A request's largest body, after gzip is inflated (Segment: 500 KB)."""
    max_message: ByteSize = size("32KB")
    """A message's largest size (Segment: 32 KB); a larger one is refused and quarantined."""
    limit_per_ip: Limit | None = limit("600/1m")
    """Requests one client may send (an IPv4 address, or an IPv6 /64), as count/duration;
    over it the answer is 429 with Retry-After. Visitors behind one NAT share it. null: off."""
    limit_per_write_key: Limit | None = limit("60000/1m")
    """Requests per write key, all clients together (429 with Retry-After). null: off."""

    def check(self) -> None:
        if self.secrets:
            raise ConfigError(
                "a collect source takes `write_keys:`, not `secrets:`", path="secrets"
            )
        if not self.write_keys:
            raise ConfigError("at least one write key is required", path="write_keys")
        self.check_common()
        for i, origin in enumerate(self.origins):
            if origin != "*" and (
                not origin.startswith(("http://", "https://"))
                or origin.rstrip("/") != origin
                or origin.count("/") != 2
            ):
                raise ConfigError(
                    "expected an origin such as https://www.example.com (scheme and host, "
                    "no path or trailing slash)",
                    path=f"origins.{i}",
                )
        for i, proxy in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(
                    "expected an IP address or a CIDR network", path=f"trusted_proxies.{i}"
                ) from None


def key_id(write_key: str) -> str:
    """A short, stable name for a write key (dedupe keys, logs): never the key itself."""
    return hashlib.sha256(write_key.encode()).hexdigest()[:12]


@register
class CollectSource(Source):
    config_type = CollectConfig

    def __init__(self, name: str, config: CollectConfig) -> None:
        super().__init__(name, config)
        self.write_keys = [k.reveal() for k in config.write_keys]
        self.origins = set(config.origins)
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in config.trusted_proxies]
        self.max_message = int(config.max_message)

    def verify(self, body: bytes, headers: Headers, now: float) -> None:
        raise UnknownSource(
            f"{self.name!r} is a collect source: Segment clients send to /v1/track, "
            "/v1/batch, ... with its write key"
        )

    def identify(self, body: bytes, headers: Headers) -> tuple[str, str]:
        raise AssertionError("collect messages are stored by gateway/collect.py")

    def client_ip(self, peer: str | None, forwarded: str | None) -> str | None:
        """The client's address: the peer, or (only when the peer is a trusted proxy) the
        rightmost X-Forwarded-For address that is not one of ours."""
        if peer is None:
            return None
        hops = [h.strip() for h in (forwarded or "").split(",") if h.strip()]
        address = peer
        while hops and self._trusted(address):
            address = hops.pop()
        return address

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.proxies)
