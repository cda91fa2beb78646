"""`google-ads`: click conversions through the Google Ads API (REST), v26.

Each event whose name has a conversion action (`conversion_actions:`) becomes one
ClickConversion: the click id (gclid, else gbraid, else wbraid) from `context.clickIds` or
the properties, the event's own time as `yyyy-mm-dd hh:mm:ss+hh:mm`, value, currency and
order id from the properties, up to 5 hashed user identifiers (email; phone in E.164 with
its `+`) and the consent signals. Events without a conversion action are not routed here
at all: the destination's `events:` becomes the conversion actions' names (see
GoogleAdsConfig.check).

Requests go with `partialFailure: true`, so one bad conversion does not sink the others:
Google answers 200 and names the failed ones in `partialFailureError` (by their index in
`conversions`). A conversion Google already has counts as sent, a click too recent to
upload is retried later, anything else (an expired click, an unparseable gclid, ...) is
dead-lettered at once with Google's message.

Access tokens come from the OAuth 2.0 refresh-token grant and are kept until a minute
before they expire; a token endpoint that is down is retried, a refused refresh token is
dead-lettered with a hint. No secret is ever part of a reason or a log line.

Sources (v26 is the newest version, released 2026-10-14):
https://developers.google.com/ads/blog/posts/2026/10/announcing-v26-of-google-ads-api
https://developers.google.com/google-ads/api/reference/rpc/v26/UploadClickConversionsRequest
https://developers.google.com/google-ads/api/reference/rpc/v16/ClickConversion
https://developers.google.com/google-ads/api/rest/auth
"""

from __future__ import annotations

import asyncio
import fnmatch
import glob
import re
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from gateway.config import Secret
from gateway.identity import consent_of

from . import pii
from .base import (
    OK,
    RETRY_STATUSES,
    DestinationConfig,
    HttpDestination,
    Result,
    encode_json,
    fail,
    register,
    retry,
    retry_after,
)

API_VERSION = "v26"
MAX_AGE = 90 * 86400
"""The longest click-through window a conversion action can have: an older conversion's
click has expired for every action (EXPIRED_EVENT)."""
MAX_IDENTIFIERS = 5
"""ClickConversion.user_identifiers: "The maximum number of user identifiers for each
conversion is 5"."""
TOKEN_EARLY = 60.0
"""Refresh the access token this many seconds before Google says it expires."""
TOO_RECENT_WAIT = 6 * 3600.0
"""TOO_RECENT_EVENT: "occurred less than 6 hours ago. Retry after 6 hours have passed"."""
CLICK_IDS = ("gclid", "gbraid", "wbraid")
"""In order of preference: Google refuses gbraid and wbraid together
(GBRAID_WBRAID_BOTH_SET), so only the first one found is sent."""
_ACTION = re.compile(r"^customers/\d+/conversionActions/\d+$")
CREDENTIALS_HINT = (
    " (check this destination's developer_token, client_id, client_secret, refresh_token"
    " and login_customer_id: every event will fail the same way)"
)

# ConversionUploadError codes, by what they mean for the event. Older API versions
# named the *_EVENT codes *_CLICK; both are read.
# https://developers.google.com/google-ads/api/reference/rpc/latest/ConversionUploadErrorEnum.ConversionUploadError
ALREADY_SENT = frozenset(
    {
        "CLICK_CONVERSION_ALREADY_EXISTS",  # same click and conversion_date_time
        "DUPLICATE_CLICK_CONVERSION_IN_REQUEST",
        "ORDER_ID_ALREADY_IN_USE",  # same order id: a redelivery of this conversion
        "DUPLICATE_ORDER_ID",
    }
)
RETRY_LATER = frozenset({"TOO_RECENT_EVENT", "TOO_RECENT_CLICK", "TOO_RECENT_CONVERSION_ACTION"})
ABOUT_THE_CONFIG = frozenset(
    {
        "NO_CONVERSION_ACTION_FOUND",
        "INVALID_CONVERSION_ACTION_TYPE",
        "INVALID_CONVERSION_ACTION",
        "UNAUTHORIZED_CUSTOMER",
        "CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS",
    }
)


class GoogleAdsConfig(DestinationConfig, tag="google-ads", kw_only=True):
    no_anonymize: ClassVar[str | None] = (
        "Google refuses a conversion without a click id or a user identifier"
    )
    customer_id: str
    """The account the conversions are uploaded to (dashes allowed: 123-456-7890)."""
    developer_token: Secret
    client_id: Secret
    client_secret: Secret
    refresh_token: Secret
    conversion_actions: dict[str, str]
    """Our event name -> "customers/<id>/conversionActions/<id>". Other events are not
    sent here."""
    login_customer_id: str | None = None
    """The manager account the credentials log in through, if any."""
    api_version: str = API_VERSION
    endpoint: str = "https://googleads.googleapis.com"
    token_url: str = "https://oauth2.googleapis.com/token"
    validate_only: bool = False
    """Have Google check the conversions without recording them."""
    phone_region: str = "US"
    """The country assumed for phone numbers written without one (ISO 3166-1 alpha-2)."""

    def check(self) -> None:
        from gateway.errors import ConfigError

        super().check()
        self.customer_id = _account_id(self.customer_id, "customer_id")
        if self.login_customer_id is not None:
            self.login_customer_id = _account_id(self.login_customer_id, "login_customer_id")
        if not self.conversion_actions:
            raise ConfigError(
                "name at least one event's conversion action", path="conversion_actions"
            )
        for name, action in self.conversion_actions.items():
            if not _ACTION.match(action):
                raise ConfigError(
                    f"{action!r} is not a conversion action's resource name "
                    "(customers/<customer id>/conversionActions/<id>)",
                    path=f"conversion_actions.{name}",
                )
        self.phone_region = pii.region(self.phone_region)
        # Route events by conversion action: the destination's event filter becomes the
        # names that have one (those of them `events:` lets through), so that any other
        # event is skipped by the router (acknowledged, never sent, never dead-lettered).
        wanted = [
            name
            for name in self.conversion_actions
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.events or ["*"])
        ]
        if not wanted:
            raise ConfigError(
                "no event in conversion_actions passes this filter: nothing would be sent",
                path="events",
            )
        self.events = [glob.escape(name) for name in wanted]


def _account_id(value: str, path: str) -> str:
    from gateway.errors import ConfigError

    digits = str(value).replace("-", "").strip()
    if not digits.isdigit():
        raise ConfigError(f"{value!r} is not a Google Ads account id (123-456-7890)", path=path)
    return digits


def conversion_date_time(timestamp: str | None, now: float) -> str:
    """ "yyyy-mm-dd hh:mm:ss+|-hh:mm" ("2019-01-01 12:32:45-08:00"), in the event's own
    offset (UTC when it has none).
    https://developers.google.com/google-ads/api/reference/rpc/v26/ClickConversionResult"""
    when = None
    if timestamp:
        try:
            when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        except ValueError:
            when = None
    if when is None:
        when = datetime.fromtimestamp(now, UTC)
    elif when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    offset = when.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{when:%Y-%m-%d %H:%M:%S}{sign}{hours:02d}:{minutes:02d}"


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


@register
class GoogleAdsDestination(HttpDestination):
    config_type = GoogleAdsConfig
    consent_purpose: ClassVar[str | None] = "ads"
    max_batch: ClassVar[int] = 2000  # TOO_MANY_CONVERSIONS_IN_REQUEST: "fewer than 2001"
    max_bytes: ClassVar[int] = 4 * 1024 * 1024
    max_event_age: ClassVar[float | None] = MAX_AGE
    age_limit: ClassVar[str] = "the 90-day longest click-through window of Google Ads"

    def __init__(self, name: str, config: GoogleAdsConfig) -> None:
        super().__init__(name, config)
        self.actions = dict(config.conversion_actions)
        self.region = config.phone_region
        self._token: str | None = None
        self._expires = 0.0
        self._token_lock = asyncio.Lock()

    # --- what is sent -----------------------------------------------------------------

    def phone(self, text: str) -> str:
        # E.164 with its `+`, then SHA-256 (like TikTok's form, unlike Meta's)
        # https://developers.google.com/google-ads/api/docs/conversions/enhance-conversions
        return pii.e164(text, self.region)

    @staticmethod
    def email(text: str) -> str:
        """Lower-case; for gmail.com and googlemail.com also without the dots before the
        `@` (Gmail ignores them), as Google's own enhanced-conversions samples normalize
        (normalizeAndHashEmailAddress in UploadEnhancedConversionsForWeb of every
        google-ads client library; `+tags` are kept there too)."""
        text = pii.email(text)
        user, at, domain = text.rpartition("@")
        if at and domain in ("gmail.com", "googlemail.com"):
            return user.replace(".", "") + at + domain
        return text

    def identifiers(self, event: dict[str, Any]) -> list[dict[str, str]]:
        """Hashed email and phone identifiers (context.traits, properties, traits), at most 5."""
        who = pii.person(event)
        found: list[dict[str, str]] = []
        for key, field, normalize in (
            ("email", "hashedEmail", self.email),
            ("phone", "hashedPhoneNumber", self.phone),
        ):
            for value in _values(who[key]):
                digest = pii.hashed(value, normalize)
                if digest and {field: digest} not in found:
                    found.append({field: digest})
        return found[:MAX_IDENTIFIERS]

    @staticmethod
    def click_id(event: dict[str, Any]) -> tuple[str, str] | None:
        """(gclid|gbraid|wbraid, value) from context.clickIds, else the properties."""
        clicks = (event.get("context") or {}).get("clickIds") or {}
        props = event.get("properties") or {}
        for bag in (clicks, props):
            if not isinstance(bag, dict):
                continue
            for key in CLICK_IDS:
                if isinstance(bag.get(key), str | int) and str(bag[key]).strip():
                    return key, str(bag[key]).strip()
        return None

    def to_google(self, event: dict[str, Any], now: float) -> dict[str, Any]:
        """One ClickConversion, in the REST API's JSON names."""
        props = event.get("properties") or {}
        out: dict[str, Any] = {
            "conversionAction": self.actions[event.get("event") or ""],
            "conversionDateTime": conversion_date_time(event.get("timestamp"), now),
        }
        click = self.click_id(event)
        if click:
            out[click[0]] = click[1]
        value = props.get("revenue", props.get("value", props.get("total")))
        if isinstance(value, int | float) and not isinstance(value, bool):
            out["conversionValue"] = float(value)
        if props.get("currency"):
            out["currencyCode"] = str(props["currency"]).upper()
        if props.get("order_id") not in (None, ""):
            out["orderId"] = str(props["order_id"])
        identifiers = self.identifiers(event)
        if identifiers:
            out["userIdentifiers"] = identifiers
        context = event.get("context")
        consent = consent_of(context.get("consent") if isinstance(context, dict) else None)
        given = {
            theirs: consent[ours].upper()  # GRANTED / DENIED
            for ours, theirs in (
                ("ad_user_data", "adUserData"),
                ("ad_personalization", "adPersonalization"),
            )
            if ours in consent
        }
        if given:
            out["consent"] = given
        return out

    def precheck(self, event: dict[str, Any], now: float) -> Result | None:
        name = event.get("event") or event.get("type")
        if event.get("type") != "track" or name not in self.actions:
            # The route keeps these away; an event that gets here anyway is refused
            # rather than uploaded under a guessed conversion action.
            return fail(f"no conversion action for {name!r} (see conversion_actions)")
        if self.click_id(event) is None and not self.identifiers(event):
            return fail(
                "no click id (gclid, gbraid, wbraid in context.clickIds or the properties) "
                "and no email or phone: Google Ads cannot attribute this conversion"
            )
        return super().precheck(event, now)

    def request(self, batch: list[dict[str, Any]], now: float) -> tuple[str, dict[str, str], bytes]:
        config: GoogleAdsConfig = self.config  # type: ignore[assignment]
        assert self._token is not None, "an access token first"
        # https://developers.google.com/google-ads/api/rest/auth: OAuth bearer token,
        # developer-token, and login-customer-id when logging in through a manager account
        headers = {
            "content-type": "application/json",
            "authorization": f"Bearer {self._token}",
            "developer-token": config.developer_token.reveal(),
        }
        if config.login_customer_id:
            headers["login-customer-id"] = config.login_customer_id
        body = {
            "conversions": [self.to_google(e, now) for e in batch],
            "partialFailure": True,  # "This should always be set to true."
            "validateOnly": config.validate_only,
        }
        url = (
            f"{config.endpoint.rstrip('/')}/{config.api_version}/customers/"
            f"{config.customer_id}:uploadClickConversions"
        )
        return url, headers, encode_json(body)

    # --- the access token -------------------------------------------------------------

    async def access_token(self, now: float) -> str | Result:
        """A cached access token, refreshed a minute before it expires; or why there is none.
        https://developers.google.com/identity/protocols/oauth2/web-server#offline"""
        if self._token and now < self._expires - TOKEN_EARLY:
            return self._token
        async with self._token_lock:
            if self._token and now < self._expires - TOKEN_EARLY:
                return self._token  # another batch refreshed it meanwhile
            return await self._refresh(now)

    async def _refresh(self, now: float) -> str | Result:
        config: GoogleAdsConfig = self.config  # type: ignore[assignment]
        assert self.client is not None, "start() first"
        form = {
            "grant_type": "refresh_token",
            "client_id": config.client_id.reveal(),
            "client_secret": config.client_secret.reveal(),
            "refresh_token": config.refresh_token.reveal(),
        }
        try:
            response = await self.client.post(config.token_url, data=form)
        except httpx.TimeoutException:
            return retry(f"OAuth token endpoint timed out after {float(config.timeout):g} s")
        except httpx.TransportError as e:
            return retry(f"OAuth token endpoint unreachable: {type(e).__name__}")
        status = response.status_code
        if status in RETRY_STATUSES:
            after = retry_after(response.headers.get("retry-after"), now)
            return retry(f"OAuth token endpoint: HTTP {status}", after, status)
        body = _json(response)
        token, lifetime = body.get("access_token"), body.get("expires_in", 3600)
        if not response.is_success or not isinstance(token, str) or not token:
            # Only Google's error code and description: the reply is never echoed whole.
            error = str(body.get("error") or "no access_token")[:60]
            described = str(body.get("error_description") or "")[:150]
            why = f"OAuth token refresh refused: HTTP {status} {error}"
            why += f": {described}" if described else ""
            return fail(why + CREDENTIALS_HINT, status)
        self._token = token
        self._expires = now + (float(lifetime) if isinstance(lifetime, int | float) else 3600.0)
        return token

    # --- sending and what came back ---------------------------------------------------

    async def _send(self, batch: list[dict[str, Any]], now: float) -> list[Result]:
        token = await self.access_token(now)
        if isinstance(token, Result):
            return [token] * len(batch)
        return await super()._send(batch, now)

    def results(self, response: httpx.Response, batch: list[dict[str, Any]]) -> list[Result]:
        if response.is_success:
            failure = _json(response).get("partialFailureError")
            if not isinstance(failure, dict):
                return [OK] * len(batch)
            return _partial_results(failure, len(batch))
        error = _json(response).get("error")
        error = error if isinstance(error, dict) else {}
        detail = _first_error(error)
        message = (detail or {}).get("message") or error.get("message") or response.text
        code = _code(detail) if detail else error.get("status", "")
        why = f"Google Ads HTTP {response.status_code} {code}: {message}".strip()[:300]
        if response.status_code == 401:
            # The access token was revoked or expired early: the next attempt asks for a
            # new one (a refresh token that no longer works fails there, with the hint).
            self._token = None
            return [retry(why + CREDENTIALS_HINT, status=401)] * len(batch)
        if response.status_code == 403:
            why += CREDENTIALS_HINT
        return [fail(why, response.status_code)] * len(batch)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _errors(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The GoogleAdsError list of a google.rpc.Status whose details hold a GoogleAdsFailure.
    https://developers.google.com/google-ads/api/docs/best-practices/partial-failures"""
    found = []
    for detail in status.get("details") or []:
        if isinstance(detail, dict):
            found.extend(e for e in detail.get("errors") or [] if isinstance(e, dict))
    return found


def _first_error(status: dict[str, Any]) -> dict[str, Any] | None:
    errors = _errors(status)
    return errors[0] if errors else None


def _code(error: dict[str, Any]) -> str:
    """`CLICK_NOT_FOUND` from errorCode {"conversionUploadError": "CLICK_NOT_FOUND"}."""
    codes = error.get("errorCode") or {}
    return str(next(iter(codes.values()), "UNKNOWN")) if isinstance(codes, dict) else "UNKNOWN"


def _index(error: dict[str, Any]) -> int | None:
    """Which conversion an error is about: location.fieldPathElements'
    {"fieldName": "conversions", "index": i}. A `conversions` element without its index
    is conversions[0]: proto3 JSON leaves out a field at its zero value unless the field
    tracks presence, so a server whose FieldPathElement.index does not may drop a 0."""
    for element in (error.get("location") or {}).get("fieldPathElements") or []:
        if isinstance(element, dict) and element.get("fieldName") == "conversions":
            index = element.get("index", 0)
            return int(index) if isinstance(index, int | str) and str(index).isdigit() else None
    return None


_RANK = {"ok": 0, "retry": 1, "fail": 2}


def _classify(error: dict[str, Any]) -> Result:
    code = _code(error)
    why = f"Google Ads {code}: {error.get('message', '')}".strip()[:300]
    if code in ALREADY_SENT:
        return Result("ok", why)
    if code in RETRY_LATER:
        return retry(why, TOO_RECENT_WAIT)
    if code in ABOUT_THE_CONFIG:
        why += " (check this destination's conversion_actions and customer_id)"
    return fail(why)


def _partial_results(failure: dict[str, Any], size: int) -> list[Result]:
    """Per-conversion results from `partialFailureError`: the conversions it does not
    name went in. An error without an index (none should have one) is every unnamed
    conversion's."""
    named: dict[int, Result] = {}
    unplaced: list[Result] = []
    for error in _errors(failure):
        result, index = _classify(error), _index(error)
        if index is None or not 0 <= index < size:
            unplaced.append(result)
            continue
        if index not in named or _RANK[result.outcome] > _RANK[named[index].outcome]:
            named[index] = result
    if not named and not unplaced:
        # An error Google did not detail: nothing says which conversions went in.
        message = str(failure.get("message") or "partial failure without details")[:200]
        return [retry(f"Google Ads: {message}")] * size
    rest = max(unplaced, key=lambda r: _RANK[r.outcome]) if unplaced else OK
    return [named.get(i, rest) for i in range(size)]
