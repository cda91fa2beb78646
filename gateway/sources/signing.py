"""Shared signature mechanics: HMAC over a signed-content template, timestamps, windows.

Most vendors sign `HMAC(secret, some arrangement of timestamp and raw body)` and put the
digest, hex or base64, maybe behind a prefix, into a header. `HmacScheme` is that family
written once; the vendor modules and the generic `hmac` type only state their parameters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ..config import SourceConfig
from ..errors import NO_MATCH, SignatureError
from .base import Headers, Source

ALGORITHMS: dict[str, Callable] = {
    "sha1": hashlib.sha1,
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
}
DIGEST_SIZES = {name: fn().digest_size for name, fn in ALGORITHMS.items()}
PLACEHOLDERS = ("body", "timestamp", "delivery_id", "method", "url")
_PLACEHOLDER = re.compile(r"\{([a-z_]*)\}")
_PAIR_SPLIT = re.compile(r"[,;]")
_HEX = re.compile(r"[0-9A-Fa-f]*")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,16}")


def compile_template(template: str) -> tuple[str, ...]:
    """Split `{timestamp}.{body}` into literal and placeholder parts; ValueError if unknown."""
    parts: list[str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        if m.group(1) not in PLACEHOLDERS:
            valid = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {m.group(0)} (valid: {valid})")
        if m.start() > pos:
            parts.append("=" + template[pos : m.start()])
        parts.append(m.group(1))
        pos = m.end()
    if pos < len(template):
        parts.append("=" + template[pos:])
    return tuple(parts)


def parse_timestamp(value: str, unit: str = "auto") -> float:
    """Unix seconds from `1700000000`, `1700000000123` (ms) or ISO 8601 `2021-03-25T05:09:27Z`."""
    text = value.strip()
    if not text.isascii():
        # float() reads any Unicode digits; a signed timestamp is plain ASCII.
        raise SignatureError("the signature timestamp is malformed")
    try:
        number = float(text)
    except ValueError:
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise SignatureError("the signature timestamp is malformed") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise SignatureError("the signature timestamp is malformed")
    if unit == "ms" or (unit == "auto" and abs(number) >= 1e11):
        return number / 1000
    return number


def check_window(timestamp: float, now: float, tolerance: float) -> None:
    """Reject replays: the timestamp must be within `tolerance` seconds of now, both ways."""
    skew = now - timestamp
    if skew > tolerance:
        raise SignatureError(
            f"the signature timestamp is {skew:.0f} s old; this source accepts {tolerance:g} s"
        )
    if -skew > tolerance:
        raise SignatureError(
            f"the signature timestamp is {-skew:.0f} s in the future; "
            f"this source accepts {tolerance:g} s (check the clocks)"
        )


def matches_any(expected: Sequence[bytes], candidates: Sequence[bytes]) -> bool:
    """Constant-time comparison of every expected digest against every candidate."""
    found = False
    for want in expected:
        for got in candidates:
            # No short-circuit: the time taken does not depend on which pair matched.
            found |= hmac.compare_digest(want, got)
    return found


@dataclass(frozen=True)
class HmacScheme:
    """One vendor's way of signing: which header, which digest, over which content."""

    header: str
    """Lower-case name of the header carrying the signature."""
    algorithm: str = "sha256"
    encoding: str = "hex"  # hex | base64
    prefix: str = ""
    """Text before each signature, e.g. `sha256=`, stripped before comparing."""
    template: tuple[str, ...] = ("body",)
    """compile_template() output: what is signed."""
    pairs: bool = False
    """The header holds `key=value` pairs (`t=..,v1=..` or `ts=..;h1=..`)."""
    signature_key: str = "v1"
    timestamp_key: str = "t"
    timestamp_header: str | None = None
    tolerance: float | None = None
    """Seconds either way; None: no freshness check."""
    display_header: str = field(default="", compare=False)
    # For messages only (the caller reads the field and decodes the secrets):
    timestamp_field: str | None = field(default=None, compare=False)
    secret_encoding: str = field(default="utf8", compare=False)
    explain: bool = field(default=False, compare=False)
    """Name the scheme in refusals (a generic source, where the user wrote it)."""
    _form: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.display_header:
            object.__setattr__(self, "display_header", self.header.title())
        object.__setattr__(self, "_form", _digest_form(self.algorithm, self.encoding))

    def describe(self) -> str:
        """The scheme in words, e.g. `HMAC-SHA256 hex of {timestamp}:{body} in
        Paddle-Signature (pairs ts/h1)`; never a secret."""
        content = "".join(p[1:] if p[0] == "=" else "{" + p + "}" for p in self.template)
        text = f"HMAC-{self.algorithm.upper()} {self.encoding} of {content}"
        text += f" in {self.display_header}"
        if self.pairs:
            text += f" (pairs {self.timestamp_key}/{self.signature_key})"
        if self.prefix:
            text += f" after `{self.prefix}`"
        if self.timestamp_header or self.timestamp_field:
            text += f", timestamp in {self._timestamp_where()}"
        if self.secret_encoding != "utf8":
            text += f", key: the secret decoded from {self.secret_encoding}"
        return text

    def _timestamp_where(self) -> str:
        if self.timestamp_header:
            return self.timestamp_header.title()
        if self.timestamp_field:
            return f"the body's `{self.timestamp_field}`"
        return f"`{self.timestamp_key}=` in {self.display_header}"

    def _refuse(self, detail: str) -> SignatureError:
        """A refusal about the signature's form or digest; names the scheme if `explain`."""
        if self.explain:
            detail += f"; scheme tried: {self.describe()}"
        return SignatureError(detail)

    def _malformed(self, signature: str) -> SignatureError:
        """Why a signature cannot be this scheme's digest: what was expected, what it is."""
        size = DIGEST_SIZES[self.algorithm]
        name = f"HMAC-{self.algorithm.upper()}"
        if self.encoding == "hex":
            wanted = f"{name} digest in hex ({2 * size} hex digits)"
        else:
            wanted = f"{name} digest in base64 ({4 * -(-size // 3)} characters)"
        return self._refuse(
            f"the {self.display_header} signature is not an {wanted}: {_looks_like(signature)}"
        )

    @property
    def uses_timestamp(self) -> bool:
        return "timestamp" in self.template or self.tolerance is not None

    def signatures(self, headers: Headers) -> tuple[list[str], str | None]:
        """The signatures the request carries and the timestamp in the signature header."""
        raw = headers.get(self.header)
        if not raw:
            raise SignatureError(f"the {self.display_header} header is missing")
        timestamp = None
        if self.pairs:
            sigs = []
            keys: dict[str, None] = {}
            for item in _PAIR_SPLIT.split(raw):
                key, sep, value = item.strip().partition("=")
                if not sep:
                    continue
                if _KEY.fullmatch(key) and len(keys) < 6:
                    keys[key] = None
                if key == self.signature_key:
                    sigs.append(value.strip())
                elif key == self.timestamp_key:
                    if timestamp is not None:
                        # Which one is signed? (The stripe library takes the first.) A
                        # second timestamp is a replay attempt or a broken sender.
                        raise SignatureError(
                            f"the {self.display_header} header holds more than one timestamp"
                        )
                    timestamp = value.strip()
            if not sigs:
                found = f"found: {', '.join(keys)}" if keys else "no key=value pairs found"
                raise self._refuse(
                    f"the {self.display_header} header has no `{self.signature_key}=` "
                    f"signature ({found})"
                )
        else:
            sigs = raw.replace(",", " ").split()
        if self.prefix and sigs:
            sigs = [s[len(self.prefix) :] for s in sigs if s.startswith(self.prefix)]
            if not sigs:
                raise self._refuse(
                    f"the {self.display_header} signature does not start with `{self.prefix}`"
                )
        if not sigs:
            raise self._refuse(f"the {self.display_header} header holds no signature")
        # Only well-formed ones can match; when none is, say so rather than blame the secret.
        well_formed = [s for s in sigs if self._form.fullmatch(s)]
        if not well_formed:
            raise self._malformed(sigs[0])
        return well_formed, timestamp

    def verify(
        self,
        keys: Sequence[bytes],
        body: bytes,
        headers: Headers,
        now: float,
        *,
        timestamp: str | None = None,
        values: dict[str, str] | None = None,
    ) -> None:
        """Raise SignatureError unless a signature in the request matches one of `keys`.

        `timestamp` is the signed timestamp when it comes from elsewhere (a body field);
        `values` fills the other placeholders ({delivery_id}, {method}, {url}).
        """
        sigs, header_ts = self.signatures(headers)
        ts_text = header_ts or timestamp
        if self.timestamp_header:
            ts_text = headers.get(self.timestamp_header)
        if self.uses_timestamp:
            if not ts_text:
                where = self._timestamp_where()
                raise SignatureError(f"the signature timestamp ({where}) is missing")
            if self.tolerance is not None:
                try:
                    signed_at = parse_timestamp(ts_text)
                except SignatureError:
                    raise SignatureError(
                        f"the signature timestamp ({self._timestamp_where()}) is malformed: "
                        "expected unix seconds or milliseconds, or ISO 8601"
                    ) from None
                check_window(signed_at, now, self.tolerance)
        content = self._content(body, ts_text or "", values or {})
        digest = [hmac.new(k, content, ALGORITHMS[self.algorithm]).digest() for k in keys]
        if self.encoding == "hex":
            expected = [d.hex().encode() for d in digest]
            given = [s.lower().encode("latin-1") for s in sigs]
        else:
            expected = [base64.b64encode(d) for d in digest]
            given = [s.encode("latin-1") for s in sigs]
        if not matches_any(expected, given):
            raise self._refuse(NO_MATCH)

    def _content(self, body: bytes, timestamp: str, values: dict[str, str]) -> bytes:
        if self.template == ("body",):
            return body
        out = []
        for part in self.template:
            if part == "body":
                out.append(body)
            elif part == "timestamp":
                out.append(timestamp.encode("latin-1", "replace"))
            elif part[0] == "=":
                out.append(part[1:].encode())
            else:
                out.append(values.get(part, "").encode("latin-1", "replace"))
        return b"".join(out)


def _digest_form(algorithm: str, encoding: str) -> re.Pattern[str]:
    """Exactly the text of a digest in this encoding: hex of its length, or canonical
    padded base64 (what b64encode makes: anything else can never compare equal)."""
    size = DIGEST_SIZES[algorithm]
    if encoding == "hex":
        return re.compile(f"[0-9A-Fa-f]{{{2 * size}}}")
    char = "[A-Za-z0-9+/]"
    tail = {0: "", 1: f"{char}[AQgw]==", 2: f"{char}{{2}}[AEIMQUYcgkosw048]="}[size % 3]
    return re.compile(f"{char}{{{4 * (size // 3)}}}{tail}")


def _looks_like(signature: str) -> str:
    """What a malformed signature is (its shape only: never the value itself)."""
    others = {size: name for name, size in DIGEST_SIZES.items()}
    if signature and len(signature) % 2 == 0 and _HEX.fullmatch(signature):
        size = len(signature) // 2
        other = f", an HMAC-{others[size].upper()} digest's length" if size in others else ""
        return f"it is {len(signature)} hex digits{other}"
    if signature and len(signature) % 4 == 0 and _BASE64.fullmatch(signature):
        try:
            size = len(base64.b64decode(signature, validate=True))
        except (binascii.Error, ValueError):
            size = -1
        if size > 0:
            other = f", an HMAC-{others[size].upper()} digest's length" if size in others else ""
            return f"it is base64 of {size} bytes{other}"
    return f"it is {len(signature)} characters, neither hex nor base64 of a digest"


def decode_secret(secret: str, encoding: str) -> bytes:
    """A signing key from its configured text: utf8 (most vendors), base64 or hex."""
    if encoding == "base64":
        text = secret.removeprefix("whsec_")
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the secret is not valid base64") from None
    elif encoding == "hex":
        try:
            key = bytes.fromhex(secret)
        except ValueError:
            raise ValueError("the secret is not valid hex") from None
    else:
        key = secret.encode()
    if not key:
        raise ValueError("the secret is empty")
    return key


class HmacSource(Source):
    """A source whose vendor signs with an HmacScheme; subclasses set `scheme` (or build it)."""

    scheme: HmacScheme
    secret_encoding = "utf8"

    def __init__(self, name: str, config: SourceConfig) -> None:
        super().__init__(name, config)
        self.keys = [decode_secret(s.reveal(), self.secret_encoding) for s in config.secrets]
        self.scheme = self.build_scheme(config)

    def build_scheme(self, config: SourceConfig) -> HmacScheme:
        return type(self).scheme

    def verify(self, body: bytes, headers: Headers, now: float) -> None:
        self.scheme.verify(self.keys, body, headers, now)
