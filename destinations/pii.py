"""Customer data normalized and SHA-256 hashed the way ad platforms require.

Meta, TikTok and Google match on hashes of normalized values: email trimmed and
lower-cased; phone as digits with the country code, no `+`, no leading zeros (TikTok
wants E.164 with the `+`); names lower-case letters; city lower-case without spaces;
state two letters lower-case; zip lower-case without spaces (US: the first five
digits); country ISO 3166-1 alpha-2 lower-case; external ids hashed too. A value that
already is a 64-hex SHA-256 is passed on as it is. Never hashed: IP address, user
agent, click ids (fbc, fbp, ttclid, gclid).
https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import unicodedata
from typing import Any

import phonenumbers

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def hashed(value: Any, normalize) -> str | None:
    """The hash of a normalized value; None for nothing usable; hashes pass through."""
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    if _HEX64.match(text.lower()):
        return text.lower()
    text = normalize(text)
    return sha256(text) if text else None


def email(text: str) -> str:
    return text.strip().lower()


def e164(text: str, region: str = "US") -> str:
    """+<country code><number>, by the phonenumbers library (trunk zeros, `00` prefixes and
    national formats are its job). A number without `+` is read in `region`, or, when it
    starts with the region's country code or is no valid number there, as digits that
    already include the country code (`4915112345678`); unparseable: the digits."""
    digits = re.sub(r"\D", "", text)
    readings: list[tuple[str, str | None]] = [(text, region)]
    if not text.lstrip().startswith("+") and digits:
        international = ("+" + digits.lstrip("0"), None)
        # `4915112345678` in DE: the country code is written, only the + is missing
        # (a national number would start with the trunk 0)
        own_code = str(phonenumbers.country_code_for_region(region))
        if digits[0] != "0" and digits.startswith(own_code):
            readings.insert(0, international)
        else:
            readings.append(international)
    numbers = []
    for candidate, default in readings:
        with contextlib.suppress(phonenumbers.NumberParseException):
            numbers.append(phonenumbers.parse(candidate, default))
    for test in (phonenumbers.is_valid_number, phonenumbers.is_possible_number):
        for number in numbers:
            if test(number):
                return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    digits = digits.lstrip("0")
    return "+" + digits if digits else ""


def region(code: str) -> str:
    """A phone region setting, checked: an ISO 3166-1 alpha-2 code phonenumbers knows."""
    from gateway.errors import ConfigError

    upper = code.strip().upper()
    if upper not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f"{code!r} is not a country code phone numbers can be read in "
            "(ISO 3166-1 alpha-2, e.g. US, GB, DE)",
            path="phone_region",
        )
    return upper


def phone(text: str, region: str = "US") -> str:
    """Meta's form: E.164 without the `+`."""
    return e164(text, region).lstrip("+")


def name(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(c for c in text if c.isalpha())


def city(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalpha())


US_STATES = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca",
    "colorado": "co", "connecticut": "ct", "delaware": "de", "districtofcolumbia": "dc",
    "florida": "fl", "georgia": "ga", "hawaii": "hi", "idaho": "id", "illinois": "il",
    "indiana": "in", "iowa": "ia", "kansas": "ks", "kentucky": "ky", "louisiana": "la",
    "maine": "me", "maryland": "md", "massachusetts": "ma", "michigan": "mi",
    "minnesota": "mn", "mississippi": "ms", "missouri": "mo", "montana": "mt",
    "nebraska": "ne", "nevada": "nv", "newhampshire": "nh", "newjersey": "nj",
    "newmexico": "nm", "newyork": "ny", "northcarolina": "nc", "northdakota": "nd",
    "ohio": "oh", "oklahoma": "ok", "oregon": "or", "pennsylvania": "pa",
    "rhodeisland": "ri", "southcarolina": "sc", "southdakota": "sd", "tennessee": "tn",
    "texas": "tx", "utah": "ut", "vermont": "vt", "virginia": "va", "washington": "wa",
    "westvirginia": "wv", "wisconsin": "wi", "wyoming": "wy", "puertorico": "pr",
}  # fmt: skip


def state(text: str) -> str:
    """US states as their two-letter code (`California` -> `ca`); others lower-case letters."""
    letters = "".join(c for c in text.lower() if c.isalpha())
    return US_STATES.get(letters, letters)


def zip_code(text: str) -> str:
    text = text.lower().replace(" ", "").replace("-", "")
    return text[:5] if text[:5].isdigit() and len(text) in (5, 9) else text


def country(text: str) -> str:
    letters = "".join(c for c in text.lower() if c.isalpha())
    return letters if len(letters) == 2 else ""


def plain(text: str) -> str:
    return text.strip()


def person(event: dict[str, Any]) -> dict[str, Any]:
    """What the event says about the person: traits, then properties, then context.traits."""
    found: dict[str, Any] = {}
    for bag in (
        event.get("context", {}).get("traits") or {},
        event.get("properties") or {},
        event.get("traits") or {},
    ):
        for key, value in bag.items():
            if value not in (None, ""):
                found[key] = value
    address = found.get("address") if isinstance(found.get("address"), dict) else {}
    return {
        "email": found.get("email"),
        "phone": found.get("phone"),
        "first_name": found.get("firstName") or found.get("first_name"),
        "last_name": found.get("lastName") or found.get("last_name"),
        "city": address.get("city") or found.get("city"),
        # Only an address's: a flat `state` is as often something else's (a Shopify
        # customer's account state is `enabled`), and a wrong one hashed as `st` spoils
        # the match it was meant to help.
        "state": address.get("state"),
        "zip": address.get("postalCode") or found.get("zip") or found.get("postal_code"),
        "country": address.get("country") or found.get("country"),
    }
