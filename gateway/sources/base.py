"""What every source type is: verify a request, name its delivery, say what to keep.

A source type is one module that subclasses `Source`, declares its config struct and
registers itself with `@register`. The HTTP layer only ever calls the methods below.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from ..config import SourceConfig
from ..errors import PayloadError

Headers = Mapping[str, str]  # lower-case names, as ASGI gives them

SOURCE_TYPES: dict[str, type[Source]] = {}


def register(cls: type[Source]) -> type[Source]:
    """Class decorator: make a source type available under its config's `type:` tag."""
    tag = cls.config_type.__struct_config__.tag
    if not isinstance(tag, str):
        raise TypeError(f"{cls.__name__}.config_type needs a string tag")
    SOURCE_TYPES[tag] = cls
    return cls


class Source:
    """One configured inbound source (`sources.<name>` in config.yaml)."""

    config_type: ClassVar[type[SourceConfig]]
    vendor_headers: ClassVar[tuple[str, ...]] = ()
    """Headers the vendor sends that later stages (or a re-verification) need."""

    def __init__(self, name: str, config: SourceConfig) -> None:
        self.name = name
        self.config = config
        self.max_body = int(config.max_body)
        self.dedupe_ttl_ms = max(1, int(config.dedupe_ttl * 1000))
        from normalizers.mapping import headers_used

        # Every header a mapping reads with header() is kept too: otherwise `map` and `test`
        # would see it and the live worker would not.
        self.kept_headers = tuple(
            dict.fromkeys(
                [
                    "content-type",
                    *self.vendor_headers,
                    *self.extra_headers(),
                    *(h.lower() for h in config.keep_headers),
                    *headers_used(config.mappings, config.user_id),
                ]
            )
        )

    def extra_headers(self) -> tuple[str, ...]:
        """Headers to keep that depend on this source's config (the generic type's)."""
        return ()

    def verify(self, body: bytes, headers: Headers, now: float) -> None:
        """Raise SignatureError unless the request is signed by one of the secrets."""
        raise NotImplementedError

    def identify(self, body: bytes, headers: Headers) -> tuple[str, str]:
        """(delivery id, dedupe key) of a verified request; PayloadError if there is none."""
        raise NotImplementedError

    has_challenge: ClassVar[bool] = False
    """`challenge` may answer unsigned set-up requests (any method) before `verify`."""

    def challenge(self, method: str, body: bytes, headers: Headers, now: float) -> Any:
        """A catalog.Reply to an unsigned set-up request (Dropbox's GET challenge), or None."""
        return None

    def handshake(self, body: bytes, headers: Headers) -> Any:
        """A reply (bytes, or a catalog.Reply) to a signed set-up request the vendor sends
        after `verify` (e.g. Slack's url_verification); None for a delivery."""
        return None

    def ack_body(self, headers: Headers) -> bytes | None:
        """A replacement for the JSON acknowledgement, where the vendor shows it to users."""
        return None

    def ack_content_type(self) -> str | None:
        """The content type of `ack_body` (None: JSON)."""
        return None

    def ack_status(self) -> int:
        """The status of an accepted delivery's answer (200; Discord wants 204)."""
        return 200

    def headers_to_store(self, headers: Headers) -> dict[str, str]:
        return {k: headers[k] for k in self.kept_headers if k in headers}


def build_sources(sources: Mapping[str, SourceConfig]) -> dict[str, Source]:
    return {name: SOURCE_TYPES[_tag(cfg)](name, cfg) for name, cfg in sources.items()}


def _tag(config: SourceConfig) -> str:
    return config.__struct_config__.tag  # type: ignore[return-value]


# --- delivery ids from a JSON body, decoding only the fields asked for ----------------------


class BodyFields:
    """Reads a few (possibly nested, dotted) fields of a JSON body without decoding the rest.

    msgspec skips everything a Struct does not declare, which keeps id lookups on the
    ingest path cheap even for large payloads.
    """

    def __init__(self, *paths: str) -> None:
        self.paths = paths
        tree: dict[str, Any] = {}
        for path in paths:
            node = tree
            parts = path.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = None
        self._type = _struct_for(tree, "Body")
        self._decoder = msgspec.json.Decoder(self._type)

    def read(self, body: bytes) -> dict[str, Any]:
        """{path: value or None}; PayloadError if the body is not a JSON object."""
        try:
            obj = self._decoder.decode(body)
        except msgspec.ValidationError as e:
            raise PayloadError(f"unexpected JSON shape: {e}") from None
        except msgspec.DecodeError:
            raise PayloadError("the body is not valid JSON") from None
        except RecursionError:
            raise PayloadError("the body's JSON is nested too deeply") from None
        out = {}
        for path in self.paths:
            value: Any = obj
            for part in path.split("."):
                value = getattr(value, _attr(part), None) if value is not None else None
            out[path] = value
        return out


def _attr(name: str) -> str:
    return "f_" + hashlib.md5(name.encode()).hexdigest()[:12]


def _struct_for(tree: dict[str, Any], name: str) -> type:
    fields = []
    for key, sub in tree.items():
        tp: Any = _struct_for(sub, name + "_") | None if sub else Any
        fields.append((_attr(key), tp, msgspec.field(default=None, name=key)))
    return msgspec.defstruct(name, fields, kw_only=True)


def delivery_id_from(value: Any, what: str) -> str:
    """A delivery id as a non-empty string, or a PayloadError saying where it was looked for."""
    if value is None or value == "":
        raise PayloadError(f"no delivery id: {what} is missing")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PayloadError(f"no usable delivery id: {what} is not a string or a number")
    text = str(value).strip()
    if not text or len(text) > 512 or not _encodable(text):
        raise PayloadError(f"no usable delivery id in {what}")
    return text


def _encodable(text: str) -> bool:
    """False for lone surrogates (JSON `\\ud800`), which cannot become a Redis key."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def body_hash(body: bytes) -> str:
    """A delivery id for vendors that send none: identical bodies count as one delivery."""
    return "sha256:" + hashlib.sha256(body).hexdigest()
