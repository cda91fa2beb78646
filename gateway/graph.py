"""The identity graph: which identifiers (cookie, login, email, vendor ids) are one person.

An identifier is a typed string: `user:<userId>`, `anon:<anonymousId>`,
`email:<sha256 hex of the trimmed, lower-cased address>`, `phone:<sha256 hex of E.164>`,
`ext:<type>:<id>` (a vendor's id from context.externalIds). Emails and phones are stored
hashed only; the email hash is the one ad platforms' conversion APIs match on (trim,
lower-case, SHA-256), the phone hash Google's (E.164, SHA-256). `link()` puts a set of
identifiers seen together into one profile; `resolve_many()` answers a worker's batch in
one round trip; `forget()` erases a person.

Keys (one hash tag, so each call is one atomic script, also on Redis Cluster; the price is
that the graph lives on one shard):

    <prefix>:{idg}:i:<identifier>   the identifier's profile id (string)
    <prefix>:{idg}:p:<id>           profile: created, first_seen, last_seen (ms), n:<type>
                                    (how many of each type), x (expiry ms, no userId only),
                                    attributes a:<name> (latest wins) and f:<name> (earliest
                                    wins), each with <field>@ (when, ms), and o:<vendor id>
                                    (ids waiting for a merge event; since when, ms)
    <prefix>:{idg}:p:<id>:ids       its identifiers (set)
    <prefix>:{idg}:p:<id>:from      ids of the profiles merged into it (set)
    <prefix>:{idg}:f:<old id>       a merged profile's id -> the profile it now lives in
    <prefix>:{idg}:forgotten        zset: tombstone(identifier) (a hash) -> until when (ms)
    <prefix>:{idg}:v:<anonymousId>  a visitor's record from POST /v1/id (gateway/identity.py):
                                    consent, first/last touch, each with <field>@

The merge rule, one script per call: the call's identifiers are taken highest priority
first (user, email, phone, ext, anon; then by value) and each one's profile (or the
identifier alone, when new) joins the call's group unless that would put more identifiers
of one type in the group than `GraphLimits.per_type` allows (by default one userId): then
it is refused, stays where it was (a new one stays unlinked), and counts as a conflict.
The group becomes one profile: the oldest (by creation time, then id) survives and keeps
its id, every other one's identifiers move to it and its id forwards to it. A merge never
drops an identifier. Block-listed and forgotten identifiers are left out of the call.

What does not depend on order: a connected set of identifiers (linked directly or through
others, over every call ever made) that fits the limits ends as exactly one profile,
whatever the order of the calls, concurrent or not; and replaying calls already applied
changes nothing (in any order), so a full replay gives the same profiles. What does: when
the connected set breaks a limit (two userIds behind one shared anonymousId), which
profile the shared identifiers end in depends on which link came first; the userIds
themselves never merge. (No rule can avoid that without splitting profiles: after
{a, u1} alone, a must be with u1.)

Profiles without a userId expire `anonymous_ttl_ms` after their last link (all their keys;
refreshed at most once per `ttl_refresh_ms`); a userId joining makes them permanent.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import phonenumbers
from redis.exceptions import NoScriptError, ResponseError

from .config import IdentityConfig
from .errors import StoreUnavailable
from .store import CLUSTER_ERRORS, Store

KINDS = ("user", "email", "phone", "ext", "anon")
"""Identifier types, highest priority first (Segment's order: user_id, then email, ...):
https://segment.com/docs/unify/identity-resolution/identity-resolution-settings/#priority"""
_RANK = {kind: rank for rank, kind in enumerate(KINDS)}
MAX_ID_LENGTH = 256  # a longer userId, anonymousId or vendor id is junk, not an id
_EXT_TYPE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
DAY_MS = 86_400_000


def _default_caps() -> Mapping[str, int]:
    return MappingProxyType({"user": 1, "email": 20, "phone": 20, "ext": 50, "anon": 100})


@dataclass(frozen=True)
class GraphLimits:
    """Guard rails: how much one profile may hold and what is never linked."""

    per_type: Mapping[str, int] = field(default_factory=_default_caps)
    """Most identifiers of each type in one profile; `user: 1` = two userIds never merge."""
    blocked: tuple[str, ...] = ("-1", "null", "undefined", "anonymous")
    """Raw values never linked, as any type (an email here is normalized and hashed, a phone
    put in E.164 with the graph's region). Segment's suggested list plus JS's `undefined`:
    https://segment.com/docs/unify/identity-resolution/identity-resolution-settings/#blocked-values"""
    blocked_patterns: tuple[str, ...] = (r"[0-]*",)
    """Regular expressions a whole raw userId, anonymousId or vendor id must not match
    (Segment's "zeroes and dashes": `0`, the nil UUID)."""
    anonymous_ttl_ms: int = 400 * DAY_MS
    """A profile without a userId is deleted this long after its last link (0: never)."""
    ttl_refresh_ms: int = DAY_MS
    """Expiry is pushed back at most this often (a refresh rewrites every key of the
    profile), so a profile expires between ttl - this and ttl after its last link. At most
    a tenth of the TTL."""
    forget_ttl_ms: int = 10 * 365 * DAY_MS
    """How long an erased identifier stays unlinkable."""
    max_per_call: int = 32
    """Identifiers one call may link; the lowest-priority ones beyond are refused."""

    def __post_init__(self) -> None:
        for kind, cap in self.per_type.items():
            if kind not in _RANK or not isinstance(cap, int) or cap < 0:
                raise ValueError(f"per_type: {kind}: {cap!r} (a type of {KINDS}, cap >= 0)")
        if min(self.anonymous_ttl_ms, self.ttl_refresh_ms, self.forget_ttl_ms) < 0:
            raise ValueError("TTLs are >= 0")
        if self.forget_ttl_ms == 0 or self.max_per_call < 1:
            raise ValueError("forget_ttl_ms and max_per_call are >= 1")


@dataclass(frozen=True, slots=True)
class LinkResult:
    profile_id: str | None
    """The profile the call's identifiers are in (None: nothing could be linked)."""
    merged: list[str]
    """Profiles merged into it by this call (their ids now forward to it)."""
    conflicts: int
    """Profiles or new identifiers kept apart because joining would break a limit."""
    blocked: list[str]
    """Identifiers never linked: block-listed or forgotten."""
    refused: list[str]
    """Identifiers of the call left out of the profile (conflicts, over max_per_call)."""
    created: bool = False
    """A new profile was made (with the id the call minted)."""


def _text(value: Any) -> str | None:
    """An id as text: strings and integers count; blank or overlong ones do not."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value.strip() and len(value) <= MAX_ID_LENGTH:
        return value
    return None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def email_id(value: Any) -> str | None:
    """`email:<sha256 hex>` of the trimmed, lower-cased address; None if not an address."""
    if not isinstance(value, str) or len(value) > 1024:
        return None
    return _email_id(value)


@functools.lru_cache(maxsize=65_536)  # a customer's events repeat the address
def _email_id(value: str) -> str | None:
    address = value.strip().lower()
    if len(address) > 254 or not _EMAIL.fullmatch(address):
        return None
    return "email:" + _sha256(address)


def phone_id(value: Any, region: str | None = None) -> str | None:
    """`phone:<sha256 hex of E.164>` (`+14155552671`); None unless a valid number. Numbers
    without a country code need `region` (ISO 3166 alpha-2, e.g. "US")."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or len(value) > 64:
        return None
    return _phone_id(value, region)


@functools.lru_cache(maxsize=65_536)  # parsing a number costs ~50 us
def _phone_id(value: str, region: str | None) -> str | None:
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return "phone:" + _sha256(
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    )


def external_id(id_type: Any, value: Any, region: str | None = None) -> str | None:
    """An entry of context.externalIds as an identifier. Segment's own types name ours
    (`user_id`, `email`, `phone`, `anonymous_id`): an email there is hashed like any."""
    value, id_type = _text(value), _text(id_type)
    if value is None or id_type is None or not _EXT_TYPE.fullmatch(id_type):
        return None
    if id_type == "email":
        return email_id(value)
    if id_type == "phone":
        return phone_id(value, region)
    if id_type == "user_id":
        return "user:" + value
    if id_type == "anonymous_id":
        return "anon:" + value
    return f"ext:{id_type}:{value}"


@functools.lru_cache(maxsize=65_536)
def tombstone(identifier: str) -> str:
    """What the forgotten set keeps of an erased identifier: a hash, not the id."""
    return hashlib.sha256(b"forgotten\n" + identifier.encode()).hexdigest()


def priority(identifier: str) -> tuple[int, str]:
    """Sort key: higher-priority types first, then by value (a call's order is its set's)."""
    return _RANK.get(identifier.partition(":")[0], len(KINDS)), identifier


def identifiers_of(event: Mapping[str, Any], phone_region: str | None = None) -> list[str]:
    """The identifiers an event (the gateway's Event as JSON, camelCase) says are one
    person, highest priority first: userId, anonymousId, alias's previousId, email and
    phone from an identify's traits or any event's context.traits, context.externalIds.

    A webhook event's anonymousId that only restates its vendor id (`stripe:cus_123`,
    normalizers/base.py's identity rule) counts as that vendor id, and `<source>:system`
    (an event about no person) as nothing. A group call's traits describe the group, not
    a person, and are not read.
    """
    found: set[str | None] = set()
    context = event.get("context")
    context = context if isinstance(context, Mapping) else {}
    if (uid := _text(event.get("userId"))) is not None:
        found.add("user:" + uid)
    restated: set[str] = set()
    source = context.get("source")
    if isinstance(source, Mapping):
        if isinstance(name := source.get("name"), str):
            restated.add(f"{name}:system")
        vendor = source.get("type")
    else:
        vendor = None
    externals = context.get("externalIds")
    for item in externals if isinstance(externals, list) else ():
        if isinstance(item, Mapping):
            found.add(external_id(item.get("type"), item.get("id"), phone_region))
            if isinstance(vendor, str) and (vid := _text(item.get("id"))) is not None:
                restated.add(f"{vendor}:{vid}")
    anonymous = _text(event.get("anonymousId"))
    if anonymous is not None and anonymous not in restated:
        found.add("anon:" + anonymous)
    if event.get("type") == "alias" and (previous := _text(event.get("previousId"))):
        # Segment's previousId is the previous anonymousId or userId; taken as an
        # anonymousId (joining two userIds is what the default limit forbids anyway).
        found.add("anon:" + previous)
    sources = [context.get("traits")]
    if event.get("type") == "identify":
        sources.append(event.get("traits"))
    for traits in sources:
        if isinstance(traits, Mapping):
            found.add(email_id(traits.get("email")))
            found.add(phone_id(traits.get("phone"), phone_region))
    return sorted((x for x in found if x is not None), key=priority)


# Shared Lua: `base` is the hash tag's key prefix. A mapping or forward whose profile hash
# is gone counts as no profile (belt and braces: all keys of a profile expire together).
_LUA_COMMON = """
local base = ARGV[1]
local function idkey(x) return base .. 'i:' .. x end
local function pkey(p) return base .. 'p:' .. p end
local function fkey(p) return base .. 'f:' .. p end
local function alive(p)
  if p and redis.call('EXISTS', pkey(p)) == 1 then return p end
  return nil
end
local function resolve(x)
  if string.sub(x, 1, 8) == 'profile:' then
    local p = string.sub(x, 9)
    return alive(p) or alive(redis.call('GET', fkey(p)))
  end
  return alive(redis.call('GET', idkey(x)))
end
-- An attribute of a profile: field f holds the value, f .. '@' when it was true (ms).
-- `a:` fields keep the latest value, `f:` fields the earliest; a tie keeps the larger
-- value, so the outcome does not depend on the order values arrive in.
local function put(k, f, v, at)
  at = tonumber(at)
  if not v or not at then return end
  local cur = redis.call('HMGET', k, f, f .. '@')
  local was = tonumber(cur[2])
  if was and cur[1] then
    if f == 'a:consent' and at == was then
      -- Two answers at the same moment: a denial wins (fail closed), else the larger.
      local old_denies = string.find(cur[1], '"denied"', 1, true)
      local new_denies = string.find(v, '"denied"', 1, true)
      if old_denies and not new_denies then return end
      if new_denies and not old_denies then
        redis.call('HSET', k, f, v, f .. '@', at)
        return
      end
    end
    if string.sub(f, 1, 2) == 'f:' then
      if at > was or (at == was and v <= cur[1]) then return end
    elseif at < was or (at == was and v <= cur[1]) then
      return
    end
  end
  redis.call('HSET', k, f, v, f .. '@', at)
end
-- An `o:<id>` field: an id this profile's events went out under before it had a userId
-- (the value: since when, ms); the earliest time is kept.
local function put_pending(k, f, v)
  local cur = tonumber(redis.call('HGET', k, f))
  if not cur or tonumber(v) < cur then redis.call('HSET', k, f, v) end
end
"""

# KEYS[1] the tombstones (every key shares its hash tag). ARGV: base, the profile id to use
# if one is made, now (ms), anonymous ttl (ms; 0 none), refresh slack (ms), number of caps,
# (type, cap) pairs, then per identifier of the call, highest priority first: the
# identifier and its tombstone name (see `tombstone`).
# Reply: {profile id or '', created 0/1, merged ids, conflicts, blocked, refused}.
LINK_SCRIPT = (
    _LUA_COMMON
    + """
local newid, now = ARGV[2], tonumber(ARGV[3])
local ttl, slack = tonumber(ARGV[4]), tonumber(ARGV[5])
local caps, at = {}, 7
for _ = 1, tonumber(ARGV[6]) do
  caps[ARGV[at]] = tonumber(ARGV[at + 1])
  at = at + 2
end
local function kind(x) return string.match(x, '^[^:]*') end

local group, info, counts, newids = {}, {}, {}, {}
local refused_p, blocked, refused, conflicts = {}, {}, {}, 0
local function fits(add)
  for k, n in pairs(add) do
    if caps[k] and (counts[k] or 0) + n > caps[k] then return false end
  end
  return true
end
local function take(add)
  for k, n in pairs(add) do counts[k] = (counts[k] or 0) + n end
end

for j = at, #ARGV, 2 do
  local x = ARGV[j]
  local until_ms = redis.call('ZSCORE', KEYS[1], ARGV[j + 1])
  if until_ms and tonumber(until_ms) > now then
    blocked[#blocked + 1] = x
  else
    local p = resolve(x)
    if p then
      if refused_p[p] then
        refused[#refused + 1] = x
      elseif not info[p] then
        local flat = redis.call('HGETALL', pkey(p))
        local h, add = {}, {}
        for f = 1, #flat, 2 do
          h[flat[f]] = flat[f + 1]
          if string.sub(flat[f], 1, 2) == 'n:' then
            add[string.sub(flat[f], 3)] = tonumber(flat[f + 1])
          end
        end
        if fits(add) then
          take(add)
          info[p] = h
          group[#group + 1] = p
        else
          refused_p[p] = true
          refused[#refused + 1] = x
          conflicts = conflicts + 1
        end
      end
    else
      local add = {[kind(x)] = 1}
      if fits(add) then
        take(add)
        newids[#newids + 1] = x
      else
        refused[#refused + 1] = x
        conflicts = conflicts + 1
      end
    end
  end
end
if #group == 0 and #newids == 0 then return {'', 0, {}, conflicts, blocked, refused} end

-- The survivor: the oldest profile (creation time, then id), or a new one.
local s, created, expires, had_user = nil, 0, nil, false
for _, p in ipairs(group) do
  if not s then s = p else
    local a, b = tonumber(info[p].created), tonumber(info[s].created)
    -- (ids are UUIDs: Lua's locale-aware string order is their byte order)
    if a < b or (a == b and p < s) then s = p end
  end
end
local first, last = now, now
if s then
  expires = tonumber(info[s].x)
  had_user = tonumber(info[s]['n:user'] or '0') > 0
else
  s, created = newid, 1
  if redis.call('EXISTS', pkey(s)) == 1 or redis.call('EXISTS', fkey(s)) == 1 then
    return redis.error_reply('ERR profile id ' .. s .. ' is taken')
  end
  redis.call('HSET', pkey(s), 'created', now)
end
local sk = pkey(s)
local sids, sfrom = sk .. ':ids', sk .. ':from'
local written, merged = {sk, sids}, {}
for _, p in ipairs(group) do
  local h = info[p]
  first = math.min(first, tonumber(h.first_seen))
  last = math.max(last, tonumber(h.last_seen))
  if p ~= s then
    local pk = pkey(p)
    for _, x in ipairs(redis.call('SMEMBERS', pk .. ':ids')) do
      redis.call('SET', idkey(x), s)
      redis.call('SADD', sids, x)
      written[#written + 1] = idkey(x)
    end
    for f, v in pairs(h) do
      local kind = string.sub(f, 1, 2)
      if kind == 'n:' then
        redis.call('HINCRBY', sk, f, v)
      elseif (kind == 'a:' or kind == 'f:') and string.sub(f, -1) ~= '@' then
        put(sk, f, v, h[f .. '@'])
      elseif kind == 'o:' then
        put_pending(sk, f, v)
      end
    end
    local from = redis.call('SMEMBERS', pk .. ':from')
    from[#from + 1] = p
    for _, m in ipairs(from) do
      redis.call('SET', fkey(m), s)
      redis.call('SADD', sfrom, m)
      written[#written + 1] = fkey(m)
    end
    written[#written + 1] = sfrom
    redis.call('DEL', pk, pk .. ':ids', pk .. ':from')
    merged[#merged + 1] = p
  end
end
for _, x in ipairs(newids) do
  redis.call('SET', idkey(x), s)
  redis.call('SADD', sids, x)
  redis.call('HINCRBY', sk, 'n:' .. kind(x), 1)
  written[#written + 1] = idkey(x)
end
redis.call('HSET', sk, 'first_seen', first, 'last_seen', last)

-- Expiry: a profile with a userId is kept; one without expires ttl after its last link.
-- Every key of it gets the same absolute time, kept in the hash as `x` (relative TTLs set
-- one after the other would differ by a millisecond: an identifier's key could be gone
-- while its profile lives, and the next link would count that identifier twice).
local function all_keys()
  local keys = {sk, sids, sfrom}
  for _, x in ipairs(redis.call('SMEMBERS', sids)) do keys[#keys + 1] = idkey(x) end
  for _, m in ipairs(redis.call('SMEMBERS', sfrom)) do keys[#keys + 1] = fkey(m) end
  return keys
end
if counts['user'] and counts['user'] > 0 then
  if created == 0 and not had_user then
    redis.call('HDEL', sk, 'x')
    for _, k in ipairs(all_keys()) do redis.call('PERSIST', k) end
  end
elseif ttl > 0 then
  local clock = redis.call('TIME')
  clock = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  if not expires or expires - clock < ttl - slack then
    expires = clock + ttl
    redis.call('HSET', sk, 'x', expires)
    for _, k in ipairs(all_keys()) do redis.call('PEXPIREAT', k, expires) end
  else
    for _, k in ipairs(written) do redis.call('PEXPIREAT', k, expires) end
  end
end
return {s, created, merged, conflicts, blocked, refused}
"""
)

# KEYS[1] the tombstones. ARGV: base, number of lists, then per list its length and its
# identifiers (or `profile:<id>`), highest priority first: each list is answered by the
# profile of its first identifier that has one.
# Reply: {{per list: 0 or the index of its profile}, {id, {created, first_seen, last_seen,
# expires at or false}, ids, from, HGETALL}...}: each profile once, however many lists
# share it.
RESOLVE_SCRIPT = (
    _LUA_COMMON
    + """
local index, profiles, position = {}, {}, {}
local function found(p)
  if not p then return nil end
  local pos = position[p]
  if pos == nil then
    local k = pkey(p)
    local h = redis.call('HMGET', k, 'created', 'first_seen', 'last_seen', 'x')
    pos = 0
    if h[1] then
      profiles[#profiles + 1] = {p, h, redis.call('SMEMBERS', k .. ':ids'),
        redis.call('SMEMBERS', k .. ':from'), redis.call('HGETALL', k)}
      pos = #profiles
    end
    position[p] = pos
  end
  if pos > 0 then return pos end
  return nil
end
local at = 3
for l = 1, tonumber(ARGV[2]) do
  local n, pos = tonumber(ARGV[at]), nil
  for j = at + 1, at + n do
    local x = ARGV[j]
    if string.sub(x, 1, 8) == 'profile:' then
      pos = found(string.sub(x, 9)) or found(redis.call('GET', fkey(string.sub(x, 9))))
    else
      pos = found(redis.call('GET', idkey(x)))
    end
    if pos then break end
  end
  at = at + n + 1
  index[l] = pos or 0
end
return {index, profiles}
"""
)

# KEYS[1] the tombstones. ARGV: base, now (ms), number of lists, consent mode (required
# or implied), then per list: its identifiers (count, then highest priority first), its
# attributes (count, then triples field, value, at ms), and the id its event goes out
# under if that is a vendor's id with that id's identifier ('' '' if not). Each list is
# answered by the profile of its first identifier that has one; that profile takes the
# list's attributes and what the visitor records of the list's anonymousIds hold
# (consent, first and last touch), and remembers the vendor id (if the profile holds its
# identifier) while it has no userId and no web anonymousId. Where the latest consent
# denies ad_storage (under `required`: does not grant it), the profile's touches (click
# ids) are dropped.
# Reply: {{per list: 0 or the index of its profile}, {per list: the visitor record of its
# first anonymousId (HGETALL) when it has no profile, else {}}, {id, {created,
# first_seen, last_seen, expires at or false}, ids, from, attributes and pending ids
# (field, value pairs; without their times)}...}.
OBSERVE_SCRIPT = (
    _LUA_COMMON
    + """
local now, lists, required = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == 'required'
local found, visits, at = {}, {}, 5
local function vkey(x) return base .. 'v:' .. string.sub(x, 6) end
for l = 1, lists do
  local n, p, anons = tonumber(ARGV[at]), nil, {}
  for j = at + 1, at + n do
    local x = ARGV[j]
    if not p then p = resolve(x) end
    if string.sub(x, 1, 5) == 'anon:' then anons[#anons + 1] = x end
  end
  at = at + n + 1
  local m = tonumber(ARGV[at])
  local attrs_at = at + 1
  at = at + 1 + 3 * m
  local vendor, vendor_id = ARGV[at], ARGV[at + 1]
  at = at + 2
  found[l] = p or false
  if p then
    local k = pkey(p)
    for _, x in ipairs(anons) do
      local v = redis.call('HMGET', vkey(x), 'consent', 'consent@', 'first_touch',
        'first_touch@', 'last_touch', 'last_touch@')
      put(k, 'a:consent', v[1], v[2])
      put(k, 'f:ft', v[3], v[4])
      put(k, 'a:lt', v[5], v[6])
    end
    for j = attrs_at, attrs_at + 3 * m - 1, 3 do put(k, ARGV[j], ARGV[j + 1], ARGV[j + 2]) end
    -- No click ids are kept against the person's latest answer: a denial, or under
    -- `required` anything but a grant.
    local consent = redis.call('HGET', k, 'a:consent')
    if (consent and string.find(consent, '"ad_storage":"denied"', 1, true))
        or (required and not (consent and
          string.find(consent, '"ad_storage":"granted"', 1, true))) then
      redis.call('HDEL', k, 'f:ft', 'f:ft@', 'a:lt', 'a:lt@')
    end
    -- Only a vendor id the profile holds (not one a limit refused) waits for a merge.
    if vendor ~= '' and tonumber(redis.call('HGET', k, 'n:user') or '0') == 0
        and redis.call('HEXISTS', k, 'a:anon') == 0
        and redis.call('GET', idkey(vendor_id)) == p then
      put_pending(k, 'o:' .. vendor, now)
    end
    visits[l] = {}
  elseif #anons > 0 then
    visits[l] = redis.call('HGETALL', vkey(anons[1]))
  else
    visits[l] = {}
  end
end
local index, profiles, position = {}, {}, {}
for l = 1, lists do
  local p = found[l]
  if p then
    local pos = position[p]
    if not pos then
      local k = pkey(p)
      -- Attributes and pending ids only (not when each was recorded): what enriching
      -- an event needs, no more to send and parse.
      local flat, attrs = redis.call('HGETALL', k), {}
      for f = 1, #flat, 2 do
        local kind = string.sub(flat[f], 1, 2)
        if (kind == 'a:' or kind == 'f:' or kind == 'o:') and string.sub(flat[f], -1) ~= '@' then
          attrs[#attrs + 1] = flat[f]
          attrs[#attrs + 1] = flat[f + 1]
        end
      end
      profiles[#profiles + 1] = {p,
        redis.call('HMGET', k, 'created', 'first_seen', 'last_seen', 'x'),
        redis.call('SMEMBERS', k .. ':ids'), redis.call('SMEMBERS', k .. ':from'), attrs}
      pos = #profiles
      position[p] = pos
    end
    index[l] = pos
  else
    index[l] = 0
  end
end
return {index, visits, profiles}
"""
)

# KEYS[1] the tombstones. ARGV: base, identifier (or `profile:<id>`), now (ms), keep (ms),
# the profile id the caller read for it ('' none), how many identifiers that profile had,
# then pairs (identifier, tombstone name): the profile's identifiers, then any more to
# tombstone. Deletes the profile and every key pointing at it, tombstones the pairs until
# now + keep; replies 'changed' (doing nothing) if the profile is no longer what the
# caller read. Tombstone names come from the caller: the embedded store's Lua cannot hash.
FORGET_SCRIPT = (
    _LUA_COMMON
    + """
local asked, now, keep = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local p, n = resolve(asked), tonumber(ARGV[6])
if (p or '') ~= ARGV[5] then return 'changed' end
if p then
  local k = pkey(p)
  if redis.call('SCARD', k .. ':ids') ~= n then return 'changed' end
  for j = 7, 6 + 2 * n, 2 do
    if redis.call('SISMEMBER', k .. ':ids', ARGV[j]) == 0 then return 'changed' end
  end
  for j = 7, 6 + 2 * n, 2 do redis.call('DEL', idkey(ARGV[j])) end
  for _, m in ipairs(redis.call('SMEMBERS', k .. ':from')) do redis.call('DEL', fkey(m)) end
  redis.call('DEL', k, k .. ':ids', k .. ':from')
end
for j = 7, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], now + keep, ARGV[j + 1])
  if string.sub(ARGV[j], 1, 5) == 'anon:' then
    redis.call('DEL', base .. 'v:' .. string.sub(ARGV[j], 6))  -- its visitor record
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('PTTL', KEYS[1]) < keep then redis.call('PEXPIRE', KEYS[1], keep) end
return p or ''
"""
)

_SHA = {
    script: hashlib.sha1(script.encode()).hexdigest()
    for script in (LINK_SCRIPT, RESOLVE_SCRIPT, OBSERVE_SCRIPT, FORGET_SCRIPT)
}


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _profile(raw: Sequence[Any]) -> dict[str, Any]:
    """A profile as `resolve_many` answers it. `expires_at`: unix ms when it is deleted
    unless linked again (a profile without a userId); None: kept. `attributes` (when the
    script read them): what `observe` recorded, {name: (value, at ms)}; `pending`: ids
    its events went out under before it had a userId, {id: since ms}."""
    pid, (created, first_seen, last_seen, expires), ids, merged_from, *rest = raw
    out = {
        "id": pid.decode(),
        "identifiers": sorted([x.decode() for x in ids], key=priority),
        "created": int(created),
        "first_seen": int(first_seen),
        "last_seen": int(last_seen),
        "merged_from": sorted([m.decode() for m in merged_from]),
        "expires_at": int(expires) if expires else None,
    }
    if rest:
        flat = [x.decode() for x in rest[0]]
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        out["attributes"] = {
            f[2:]: (v, int(fields.get(f + "@", 0)))
            for f, v in fields.items()
            if f[:2] in ("a:", "f:") and not f.endswith("@")
        }
        out["pending"] = {f[2:]: int(v) for f, v in fields.items() if f.startswith("o:")}
    return out


def _observed(raw: Sequence[Any]) -> dict[str, Any]:
    """A profile as OBSERVE answers it, for enriching events (the hot path): its id, its
    identifiers (unordered), `values` {attribute: value} and `pending` {id: since ms}."""
    pid, _, ids, _, flat = raw
    values, pending = {}, {}
    pairs = iter(flat)
    for name, value in zip(pairs, pairs, strict=True):
        if name[0] == 111:  # b"o": a pending id
            pending[name[2:].decode()] = int(value)
        else:
            values[name[2:].decode()] = value.decode()
    return {
        "id": pid.decode(),
        "identifiers": [x.decode() for x in ids],
        "values": values,
        "pending": pending,
    }


def _flat(raw: Sequence[Any]) -> dict[str, str]:
    items = [_str(x) for x in raw]
    return dict(zip(items[::2], items[1::2], strict=True))


@dataclass(frozen=True, slots=True)
class Observation:
    """What the graph knows for one event (see `Graph.observe`)."""

    profile: dict[str, Any] | None
    """The profile (`id`, `identifiers`, `values`, `pending`), None when none holds the
    event's ids."""
    visitor: dict[str, str]
    """With no profile: the visitor record of the event's anonymousId (raw fields)."""


def limits_of(identity: IdentityConfig) -> GraphLimits:
    """The guard rails config.yaml's `identity:` sets (defaults for what it leaves out)."""
    caps = {**_default_caps(), **identity.limits}
    ttl_ms = int(float(identity.anonymous_ttl) * 1000)
    return GraphLimits(
        per_type=MappingProxyType(caps),
        blocked=GraphLimits().blocked + tuple(identity.blocked),
        anonymous_ttl_ms=ttl_ms,
        ttl_refresh_ms=min(DAY_MS, ttl_ms // 10),
    )


class Graph:
    """The identity graph in the store's Redis; see the module docstring for the rules."""

    @classmethod
    def of(cls, store: Store, identity: IdentityConfig) -> Graph:
        return cls(store, limits_of(identity), phone_region=identity.phone_region)

    def __init__(
        self, store: Store, limits: GraphLimits | None = None, *, phone_region: str | None = None
    ) -> None:
        self.store = store
        self.limits = limits or GraphLimits()
        self.phone_region = phone_region
        self.base = f"{store.keys.prefix}:{{idg}}:"
        self.tombstones = self.base + "forgotten"
        lim = self.limits
        self._blocked_raw = frozenset(v.casefold() for v in lim.blocked)
        self._blocked_patterns = [re.compile(p) for p in lim.blocked_patterns]
        hashed = {email_id(v) for v in lim.blocked} | {
            phone_id(v, phone_region) for v in lim.blocked
        }
        self._blocked_hashed = frozenset(x for x in hashed if x is not None)
        self._blocked_seen: dict[str, bool] = {}
        caps: list[Any] = [len(lim.per_type)]
        for kind, cap in sorted(lim.per_type.items()):
            caps += (kind, cap)
        slack = min(lim.ttl_refresh_ms, lim.anonymous_ttl_ms // 10)
        self._link_args = (lim.anonymous_ttl_ms, slack, *caps)

    def identifiers_of(self, event: Mapping[str, Any]) -> list[str]:
        return identifiers_of(event, self.phone_region)

    def is_blocked(self, identifier: str) -> bool:
        """On the block-list (config); forgotten identifiers are checked in Redis."""
        known = self._blocked_seen.get(identifier)
        if known is None:
            if len(self._blocked_seen) >= 100_000:
                self._blocked_seen.clear()
            known = self._blocked_seen[identifier] = self._is_blocked(identifier)
        return known

    def _is_blocked(self, identifier: str) -> bool:
        kind, _, value = identifier.partition(":")
        if kind not in _RANK:
            return False
        if kind in ("email", "phone"):
            return identifier in self._blocked_hashed
        if kind == "ext":
            value = value.partition(":")[2]
        return value.casefold() in self._blocked_raw or any(
            p.fullmatch(value) for p in self._blocked_patterns
        )

    def _call(self, identifiers: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
        """A call's identifiers in priority order; the block-listed; those over the limit."""
        ids, blocked = [], []
        for x in sorted(set(identifiers), key=priority):
            kind, sep, value = x.partition(":")
            if kind not in _RANK or not sep or not value or len(x) > 2 * MAX_ID_LENGTH:
                raise ValueError(f"not an identifier: {x[:80]!r}")
            (blocked if self.is_blocked(x) else ids).append(x)
        n = self.limits.max_per_call
        return ids[:n], blocked, ids[n:]

    def _link_command(
        self, identifiers: Iterable[str], now_ms: int, new_id: str | None
    ) -> tuple[tuple[Any, ...] | None, list[str], list[str]]:
        ids, blocked, over = self._call(identifiers)
        if not ids:
            return None, blocked, over
        command = (
            "EVALSHA", _SHA[LINK_SCRIPT], 1, self.tombstones, self.base,
            new_id or str(uuid.uuid4()), int(now_ms), *self._link_args,
            *(a for x in ids for a in (x, tombstone(x))),
        )  # fmt: skip
        return command, blocked, over

    async def link(
        self, identifiers: Iterable[str], now_ms: int, new_id: str | None = None
    ) -> LinkResult:
        """Put identifiers seen together into one profile (one atomic script call);
        `new_id` (default a fresh UUIDv4) names the profile if one has to be made."""
        [result] = await self.link_many([(identifiers, now_ms, new_id)])
        return result

    async def link_many(
        self, calls: Sequence[tuple[Iterable[str], int, str | None]]
    ) -> list[LinkResult]:
        """Several links (identifiers, now_ms, new_id) in one round trip, applied in order."""
        commands, results = [], []
        for identifiers, now_ms, new_id in calls:
            command, blocked, over = self._link_command(identifiers, now_ms, new_id)
            results.append((command, blocked, over))
            if command is not None:
                commands.append(command)
        return self._link_results(results, await self._run(commands) if commands else [])

    @staticmethod
    def _link_results(
        results: list[tuple[Any, list[str], list[str]]], raw: Sequence[Any]
    ) -> list[LinkResult]:
        replies = iter(raw)
        out = []
        for command, blocked, over in results:
            if command is None:
                out.append(LinkResult(None, [], 0, blocked, over))
                continue
            pid, created, merged, conflicts, gone, refused = next(replies)
            out.append(
                LinkResult(
                    _str(pid) or None,
                    [_str(p) for p in merged],
                    int(conflicts),
                    blocked + [_str(x) for x in gone],
                    [_str(x) for x in refused] + over,
                    bool(created),
                )
            )
        return out

    async def resolve_many(self, identifier_lists: Sequence[Iterable[str]]) -> list[dict | None]:
        """Each list's profile (that of its highest-priority identifier that has one), in
        one round trip: what the worker needs to enrich a batch of events."""
        args: list[Any] = [self.base, len(identifier_lists)]
        for identifiers in identifier_lists:
            ids = sorted({x for x in identifiers if not self.is_blocked(x)}, key=priority)
            args += (len(ids), *ids)
        command = ("EVALSHA", _SHA[RESOLVE_SCRIPT], 1, self.tombstones, *args)
        [(index, raw)] = await self._run([command])
        profiles = [_profile(r) for r in raw]
        return [profiles[int(i) - 1] if int(i) else None for i in index]

    def observe_command(
        self,
        calls: Sequence[tuple[Iterable[str], Sequence[tuple[str, str, int]], tuple[str, str]]],
        now_ms: int,
        consent: str = "implied",
        prepared: bool = False,
    ) -> tuple[Any, ...]:
        """The OBSERVE script call for a batch: per event its identifiers, the attributes
        to record on its profile (name with its `a:`/`f:` kind, value, at ms), and the
        vendor id it goes out under with its identifier (("", "") if not one).
        `prepared`: the identifiers are already unique, unblocked and in priority order."""
        args: list[Any] = [self.base, int(now_ms), len(calls), consent]
        for identifiers, attributes, (vendor, vendor_identifier) in calls:
            ids = (
                list(identifiers)
                if prepared
                else sorted({x for x in identifiers if not self.is_blocked(x)}, key=priority)
            )
            args += (len(ids), *ids, len(attributes))
            for name, value, at in attributes:
                args += (name, value, int(at))
            args += (vendor, vendor_identifier)
        return ("EVALSHA", _SHA[OBSERVE_SCRIPT], 1, self.tombstones, *args)

    def parse_observe(self, reply: Sequence[Any]) -> list[Observation]:
        index, visits, raw = reply
        profiles = [_observed(r) for r in raw]
        return [
            Observation(profiles[int(i) - 1] if int(i) else None, _flat(v))
            for i, v in zip(index, visits, strict=True)
        ]

    async def observe(
        self,
        links: Sequence[tuple[Iterable[str], int, str | None]],
        calls: Sequence[tuple[Iterable[str], Sequence[tuple[str, str, int]], tuple[str, str]]],
        now_ms: int,
        consent: str = "implied",
        prepared: bool = False,
    ) -> tuple[list[LinkResult], list[Observation]]:
        """Links, then each call's profile with attributes recorded, in ONE round trip
        (the links run first, in order): what the worker does for a batch of events.
        A call's last item is (the vendor id its event goes out under, that id's
        identifier), or ("", "")."""
        commands, results = [], []
        for identifiers, at_ms, new_id in links:
            command, blocked, over = self._link_command(identifiers, at_ms, new_id)
            results.append((command, blocked, over))
            if command is not None:
                commands.append(command)
        commands.append(self.observe_command(calls, now_ms, consent, prepared))
        replies = await self._run(commands)
        return self._link_results(results, replies[:-1]), self.parse_observe(replies[-1])

    def clear_pending(self, profile_id: str, ids: Iterable[str]) -> tuple[Any, ...]:
        """The command that drops pending ids once the merge that joins them was sent."""
        return ("HDEL", f"{self.base}p:{profile_id}", *(f"o:{x}" for x in ids))

    async def profile(self, identifier: str) -> dict | None:
        """The profile holding `identifier` (or `profile:<id>`, following merges)."""
        [found] = await self.resolve_many([[identifier]])
        return found

    async def forget(self, identifier: str, now_ms: int | None = None) -> bool:
        """Erase the profile holding `identifier` (or `profile:<id>`): every key of it and
        every key pointing at it. Its identifiers, and `identifier` itself, are never
        linked again for `forget_ttl_ms`. False if no profile held it."""
        if now_ms is None:
            now_ms = int(time.time() * 1000)
        for _ in range(10):
            found = await self.profile(identifier)
            ids = found["identifiers"] if found else []
            extra = [] if identifier in ids or identifier.startswith("profile:") else [identifier]
            pairs = [a for x in (*ids, *extra) for a in (x, tombstone(x))]
            command = (
                "EVALSHA", _SHA[FORGET_SCRIPT], 1, self.tombstones, self.base, identifier,
                int(now_ms), self.limits.forget_ttl_ms, found["id"] if found else "",
                len(ids), *pairs,
            )  # fmt: skip
            [reply] = await self._run([command])
            if _str(reply) != "changed":
                return found is not None
        raise StoreUnavailable("the profile kept changing while it was being forgotten")

    async def execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Commands that include the graph's scripts, in one round trip (scripts loaded
        again if Redis forgot them)."""
        return await self._run(commands)

    async def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        try:
            try:
                return await self.store.execute(commands)
            except NoScriptError:
                # Redis restarted or flushed its scripts: load them and run the calls
                # again. Had the flush come mid-pipeline, the calls that did run do
                # nothing new the second time (a link or an attribute already recorded).
                for script in _SHA:
                    await self.store.client.script_load(script)
                return await self.store.execute(commands)
        except ResponseError as e:
            if "is taken" in str(e):
                raise ValueError(str(e)) from None
            raise StoreUnavailable(f"the identity graph failed: {e}") from e
        except (*CLUSTER_ERRORS, OSError, TimeoutError) as e:
            raise StoreUnavailable(f"the identity graph is unavailable ({type(e).__name__})") from e
