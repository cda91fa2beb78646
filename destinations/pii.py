"""Customer data normalized and SHA-256 hashed the way ad platforms require.

Meta, TikTok and Google match on hashes of normalized values: email trimmed and
lower-cased; phone as digits with the country code, no `+`, no leading zeros (TikTok
wants E.164 with the `+`); names lower-case letters; city lower-case without spaces;
state two letters lower-case; zip lower-case without spaces (US: the first five
digits); country ISO 3166-1 alpha-2 lower-case (a written-out name by COUNTRIES);
external ids trimmed, lower-cased and hashed too. A value that
already is a 64-hex SHA-256 is passed on as it is. Never hashed: IP address, user
agent, click ids (fbc, fbp, ttclid, gclid).
https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import time
import unicodedata
from datetime import datetime
from typing import Any

import phonenumbers

from gateway.identity import consent_of  # the consent gate's reading, not a second

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


# English country names (letters only, lower-case) -> ISO 3166-1 alpha-2, for a country
# written out ("Germany", "United States"): Meta wants "two-letter country codes in ISO
# 3166-1 alpha-2 format", lower-case, before hashing (customer-information-parameters,
# `country`). Compact on purpose: a name not here is dropped, never hashed as is (a
# hashed "germany" matches no one).
COUNTRIES = {
    "afghanistan": "af", "albania": "al", "algeria": "dz", "andorra": "ad", "angola": "ao",
    "argentina": "ar", "armenia": "am", "australia": "au", "austria": "at",
    "azerbaijan": "az", "bahamas": "bs", "bahrain": "bh", "bangladesh": "bd",
    "barbados": "bb", "belarus": "by", "belgium": "be", "belize": "bz", "benin": "bj",
    "bolivia": "bo", "bosniaandherzegovina": "ba", "botswana": "bw", "brazil": "br",
    "brunei": "bn", "bulgaria": "bg", "burkinafaso": "bf", "cambodia": "kh",
    "cameroon": "cm", "canada": "ca", "chile": "cl", "china": "cn", "colombia": "co",
    "costarica": "cr", "croatia": "hr", "cuba": "cu", "cyprus": "cy", "czechia": "cz",
    "czechrepublic": "cz", "denmark": "dk", "dominicanrepublic": "do", "ecuador": "ec",
    "egypt": "eg", "elsalvador": "sv", "estonia": "ee", "ethiopia": "et", "finland": "fi",
    "france": "fr", "georgia": "ge", "germany": "de", "deutschland": "de", "ghana": "gh",
    "greece": "gr", "guatemala": "gt", "honduras": "hn", "hongkong": "hk", "hungary": "hu",
    "iceland": "is", "india": "in", "indonesia": "id", "iran": "ir", "iraq": "iq",
    "ireland": "ie", "israel": "il", "italy": "it", "ivorycoast": "ci", "jamaica": "jm",
    "japan": "jp", "jordan": "jo", "kazakhstan": "kz", "kenya": "ke", "kosovo": "xk",
    "kuwait": "kw", "latvia": "lv", "lebanon": "lb", "liechtenstein": "li",
    "lithuania": "lt", "luxembourg": "lu", "malaysia": "my", "malta": "mt",
    "mexico": "mx", "moldova": "md", "monaco": "mc", "mongolia": "mn", "montenegro": "me",
    "morocco": "ma", "mozambique": "mz", "myanmar": "mm", "nepal": "np",
    "netherlands": "nl", "thenetherlands": "nl", "newzealand": "nz", "nicaragua": "ni",
    "nigeria": "ng", "northmacedonia": "mk", "norway": "no", "oman": "om",
    "pakistan": "pk", "panama": "pa", "paraguay": "py", "peru": "pe", "philippines": "ph",
    "poland": "pl", "portugal": "pt", "puertorico": "pr", "qatar": "qa", "romania": "ro",
    "russia": "ru", "russianfederation": "ru", "rwanda": "rw", "saudiarabia": "sa",
    "senegal": "sn", "serbia": "rs", "singapore": "sg", "slovakia": "sk", "slovenia": "si",
    "southafrica": "za", "southkorea": "kr", "korearepublicof": "kr", "spain": "es",
    "srilanka": "lk", "sweden": "se", "switzerland": "ch", "taiwan": "tw",
    "tanzania": "tz", "thailand": "th", "trinidadandtobago": "tt", "tunisia": "tn",
    "turkey": "tr", "turkiye": "tr", "uganda": "ug", "ukraine": "ua",
    "unitedarabemirates": "ae", "uae": "ae", "unitedkingdom": "gb", "uk": "gb",
    "greatbritain": "gb", "england": "gb", "scotland": "gb", "wales": "gb",
    "northernireland": "gb", "unitedstates": "us", "unitedstatesofamerica": "us",
    "usa": "us", "uruguay": "uy", "uzbekistan": "uz", "venezuela": "ve", "vietnam": "vn",
    "zambia": "zm", "zimbabwe": "zw",
}  # fmt: skip


def country(text: str) -> str:
    """ISO 3166-1 alpha-2, lower-case: a two-letter code as it is, a name by COUNTRIES."""
    letters = "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if c.isalpha())
    letters = "".join(c for c in letters if c.isascii())
    if len(letters) == 2:
        return letters
    return COUNTRIES.get(letters, "")


def plain(text: str) -> str:
    return text.strip()


def external_id(text: str) -> str:
    """An id of ours, trimmed and lower-cased: the platforms compare hashes, so `U_42` and
    `u_42` must hash alike on both the pixel's and our side (Segment's TikTok formatter
    lower-cases it too: https://github.com/segmentio/action-destinations/blob/main/packages/
    destination-actions/src/destinations/tiktok-conversions/reportWebEvent/formatter.ts)."""
    return text.strip().lower()


CLICK_IDS = ("fbc", "fbp", "ttclid", "ttp", "gclid", "gbraid", "wbraid")


def click_ids(event: dict[str, Any]) -> dict[str, str]:
    """The ad click ids and platform cookies of the event: `context.clickIds` (the identity
    layer's, already with Meta's `fbc`), else the sender's own in `properties` (a gateway
    without the identity layer), where a bare `fbclid` becomes Meta's `fbc` cookie value
    `fb.1.<ms>.<fbclid>` (ms: the event's time).
    https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/fbp-and-fbc
    None from properties when the event's consent denies ad_storage (the identity layer
    leaves clickIds out then too)."""
    context = _dict(event.get("context"))
    found = {k: v.strip() for k, v in _dict(context.get("clickIds")).items() if _text(v)}
    if consent_of(context.get("consent")).get("ad_storage") == "denied":
        return found
    props = _dict(event.get("properties"))
    for key in CLICK_IDS:
        if key not in found and _text(props.get(key)):
            found[key] = props[key].strip()
    fbclid = props.get("fbclid")
    if "fbc" not in found and _text(fbclid):
        found["fbc"] = f"fb.1.{_millis(event.get('timestamp'))}.{fbclid.strip()}"
    return found


def web_page(event: dict[str, Any]) -> str | None:
    """The page URL of an event collected from the website (source type `collect`, see
    normalizers/collect.py), or None for a webhook's or a server library's event."""
    context = event.get("context") or {}
    if (context.get("source") or {}).get("type") != "collect":
        return None
    url = (context.get("page") or {}).get("url")
    if not _text(url) or not url.strip().lower().startswith(("http://", "https://")):
        return None
    return url.strip()


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _millis(iso: Any) -> int:
    """Unix ms of an ISO 8601 time (now when it is none)."""
    try:
        return int(datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return int(time.time() * 1000)


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
    first = found.get("firstName") or found.get("first_name")
    last = found.get("lastName") or found.get("last_name")
    whole = found.get("name")
    if not (first or last) and isinstance(whole, str) and len(whole.split()) >= 2:
        # Only a full `name`: its first and last words (platforms match first and last
        # name separately; "Jenny Rosen" -> fn jenny, ln rosen).
        first, last = whole.split()[0], whole.split()[-1]
    return {
        "email": found.get("email"),
        "phone": found.get("phone"),
        "first_name": first,
        "last_name": last,
        "city": address.get("city") or found.get("city"),
        # Only an address's: a flat `state` is as often something else's (a Shopify
        # customer's account state is `enabled`), and a wrong one hashed as `st` spoils
        # the match it was meant to help.
        "state": address.get("state"),
        "zip": address.get("postalCode") or found.get("zip") or found.get("postal_code"),
        "country": address.get("country") or found.get("country"),
    }


def product_lines(props: dict[str, Any], id_key: str, price_key: str) -> list[dict[str, Any]]:
    """The Segment Spec's `products` as the ad platforms' content lines: `id_key` (the
    product_id, else the sku), `quantity` (a line without one is one item; both Meta and
    TikTok need it) and, when the product has a numeric price, `price_key`. Lines without
    an id are left out. Meta: `contents` of {id, quantity, item_price}
    (https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/custom-data#contents);
    TikTok: {content_id, quantity, price} (https://business-api.tiktok.com/portal/docs?id=1771101303285761)."""
    out = []
    for product in props.get("products") or []:
        if not isinstance(product, dict):
            continue
        pid = product.get("product_id") or product.get("sku")
        if pid in (None, "") or isinstance(pid, bool | dict | list):
            continue
        quantity = product.get("quantity")
        line: dict[str, Any] = {
            id_key: str(pid),
            "quantity": int(quantity) if _number(quantity) and quantity > 0 else 1,
        }
        if _number(product.get("price")):
            line[price_key] = product["price"]
        out.append(line)
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
