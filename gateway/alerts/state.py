"""Alert state in Redis, shared by every gateway process, and the notifications outbox.

Each (rule, subject) has a hash (Keys.alert) with its state and a version. A process reads
the states, steps each through the machine below, and writes back only with a
compare-and-set on the version (one Lua script): the write and the notifications the
transition queues are one atomic step, so of two processes that evaluated the same tick
only one makes the transition, and only its notifications exist.

A set of the (rule, subject) pairs whose state is not ok lets an evaluation find those
whose rule or subject left the config, and resolve them.

Under `durability: replicated` every script here is followed by a WAIT for a replica.

Notifications wait in an outbox (a hash of jobs and a sorted set of due times). Sending
claims a due job by moving its due time a lease ahead (a script, so one process claims
it); success deletes it, failure reschedules it with backoff, and a process that dies
mid-send leaves the job to whoever claims it when the lease ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import msgspec
from redis.exceptions import NoScriptError

from ..config import ALERT_STATE_KEPT
from ..store import NotReplicated, Store

STATE_TTL_MS = ALERT_STATE_KEPT * 1000  # a state untouched this long is dropped (see docs)

Transition = Literal["firing", "resolved"]


@dataclass(frozen=True)
class State:
    """ok -> pending (breached, waiting `for`) -> firing -> resolving (clear, waiting
    resolve_after) -> ok. A breach while resolving goes back to firing silently."""

    state: str = "ok"
    since: int = 0  # ms: when the breach began (pending, firing, resolving)
    clear_since: int = 0  # ms: when it last became clear (resolving)
    version: int = 0
    # The firing notification (JSON, notify.Memo): what a resolve says when the rule or its
    # subject has left the config and cannot be asked any more.
    memo: bytes = field(default=b"", compare=False)


def step(
    s: State, breached: bool, now_ms: int, for_ms: int, resolve_ms: int
) -> tuple[State, Transition | None]:
    """The next state and the transition to notify, if any (pure)."""
    state, since, clear = s.state, s.since, s.clear_since
    if state == "ok" and breached:
        state, since = "pending", now_ms
    if state == "pending":
        if not breached:
            return replace(s, state="ok", since=0, clear_since=0), None
        if now_ms - since >= for_ms:
            return replace(s, state="firing", since=since, clear_since=0), "firing"
        return replace(s, state="pending", since=since), None
    if state == "firing" and not breached:
        state, clear = "resolving", now_ms
    elif state == "resolving" and breached:
        return replace(s, state="firing", clear_since=0), None
    if state == "resolving" and now_ms - clear >= resolve_ms:
        return replace(s, state="ok", since=0, clear_since=0), "resolved"
    return replace(s, state=state, since=since, clear_since=clear), None


def _int(value: Any) -> int:
    return int(value) if value else 0


async def load(store: Store, pairs: list[tuple[str, str]]) -> list[State]:
    """The states of (rule, subject) pairs, in order (State() for one never seen)."""
    if not pairs:
        return []
    replies = await store.execute([("HGETALL", store.keys.alert(r, s)) for r, s in pairs])
    out = []
    for reply in replies:
        if isinstance(reply, list):  # a raw pipeline reply: flat
            reply = dict(zip(reply[::2], reply[1::2], strict=True))
        d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in reply.items()}
        if not d:
            out.append(State())
            continue
        state = d.get("state", b"ok")
        out.append(
            State(
                state.decode() if isinstance(state, bytes) else str(state),
                _int(d.get("since")),
                _int(d.get("clear_since")),
                _int(d.get("version")),
                d.get("memo") or b"",
            )
        )
    return out


def member(rule: str, subject: str) -> bytes:
    return msgspec.json.encode([rule, subject])


async def known(store: Store) -> list[tuple[str, str]]:
    """The (rule, subject) pairs with a state other than ok (as last written)."""
    out = []
    for raw in await store.client.smembers(store.keys.alert_known()):
        try:
            rule, subject = msgspec.json.decode(raw, type=tuple[str, str])
        except msgspec.DecodeError:
            continue
        out.append((rule, subject))
    return out


async def forget(store: Store, pairs: list[tuple[str, str]], listed: set[tuple[str, str]]) -> None:
    """Toggle pairs in the known set: those `listed` leave it (their state is ok, or
    gone), the others join it (a state not ok written before the set existed)."""
    out = [member(*p) for p in pairs if p in listed]
    join = [member(*p) for p in pairs if p not in listed]
    calls: list[tuple[Any, ...]] = []
    if out:
        calls.append(("SREM", store.keys.alert_known(), *out))
    if join:
        calls.append(("SADD", store.keys.alert_known(), *join))
    if calls:
        await store.execute(calls)


# KEYS: state hash, outbox hash, due set, known set. ARGV: expected version, ttl ms, now
# ms, the new state's since, clear_since and state, the known set's member, the memo (""
# to keep it), then job id / job JSON pairs to queue.
_SAVE = """
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if v ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', v + 1, 'since', ARGV[4], 'clear_since', ARGV[5],
  'state', ARGV[6])
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'memo', ARGV[8]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[6] == 'ok' then
  redis.call('SREM', KEYS[4], ARGV[7])
else
  redis.call('SADD', KEYS[4], ARGV[7])
end
for i = 9, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[i])
end
return 1
"""

# KEYS: outbox hash, due set. ARGV: now ms, lease ms, how many. Returns id, JSON, token...
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local token = tonumber(ARGV[1]) + tonumber(ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local job = redis.call('HGET', KEYS[1], id)
  if job then
    redis.call('ZADD', KEYS[2], token, id)
    out[#out + 1] = id
    out[#out + 1] = job
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return {tostring(token), out}
"""

# KEYS: outbox hash, due set. ARGV: id, the claim's token, then: nothing (done: drop the
# job) or the next due ms and the job's new JSON (retry). Only the claim still holding
# the job may: a claim whose lease ran out lost it to another process.
_SETTLE = """
local due = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not due or tonumber(due) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
"""


# KEYS: outbox hash, due set. ARGV: a claim's token, now ms. Makes its jobs due again.
_RELEASE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], ARGV[1])
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[2], ARGV[2], id) end
return #ids
"""

# KEYS: the evaluation lock. ARGV: token, ttl ms. Returns 1 or 0 (taken), and Redis's
# TIME: every process reads one clock, the one of the Redis holding the alert keys.
_LOCK = """
local got = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
local t = redis.call('TIME')
return {got and 1 or 0, t[1], t[2]}
"""


class Outbox:
    """The state writes and the notifications queue of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        client = store.client
        self._save = client.register_script(_SAVE)
        self._claim = client.register_script(_CLAIM)
        self._settle = client.register_script(_SETTLE)
        self._lock = client.register_script(_LOCK)
        self._release = client.register_script(_RELEASE)

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a script; under `durability: replicated`, with a WAIT for a replica after it
        (NotReplicated if none confirms in time), so a failover cannot undo a transition
        or a sent mark that notifications were (or are about to be) sent on."""
        if not self.store.replicas:
            return await script(keys=keys, args=args)
        call = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            [reply] = await self.store.execute([call], replicated=True)
        except NoScriptError:  # a fresh primary: load it, then once more (it did nothing)
            await self.store.client.script_load(script.script)
            [reply] = await self.store.execute([call], replicated=True)
        return reply

    async def save(
        self,
        rule: str,
        subject: str,
        old: State,
        new: State,
        now_ms: int,
        jobs: dict[str, bytes],
        memo: bytes = b"",
    ) -> bool:
        """Write `new` if the stored state is still `old` (and queue `jobs` with it)."""
        keys = self.store.keys
        outbox, due = keys.alert_outbox()
        args: list[Any] = [old.version, STATE_TTL_MS, now_ms, new.since, new.clear_since]
        args += [new.state, member(rule, subject), memo]
        for job_id, body in jobs.items():
            args += [job_id, body]
        done = await self._run(
            self._save, [keys.alert(rule, subject), outbox, due, keys.alert_known()], args
        )
        return bool(done)

    async def claim(
        self, now_ms: int, lease_ms: int, count: int = 20
    ) -> tuple[int, dict[str, bytes]]:
        """Due jobs, each held for `lease_ms` by this claim's token."""
        keys = list(self.store.keys.alert_outbox())
        try:
            token, flat = await self._run(self._claim, keys, [now_ms, lease_ms, count])
        except NotReplicated:
            # Not sent on an unconfirmed claim; and not held for a lease either: due again
            # now, for the next claim a replica confirms. (A claim of another process in
            # the same millisecond has the same token: its jobs go back too, rarely.)
            await self._release(keys=keys, args=[now_ms + lease_ms, now_ms])
            raise
        pairs = zip(flat[::2], flat[1::2], strict=True)
        return int(token), {(k.decode() if isinstance(k, bytes) else k): v for k, v in pairs}

    async def done(self, job_id: str, token: int) -> bool:
        keys = list(self.store.keys.alert_outbox())
        return bool(await self._run(self._settle, keys, [job_id, token]))

    async def retry(self, job_id: str, token: int, due_ms: int, job: Any) -> bool:
        args = [job_id, token, due_ms, msgspec.json.encode(job)]
        return bool(await self._run(self._settle, list(self.store.keys.alert_outbox()), args))

    async def lock(self, token: str, ttl_ms: int) -> tuple[bool, float]:
        """This tick's evaluation, for one process of all that share the Redis; and the
        time now by Redis's clock (seconds)."""
        got, sec, usec = await self._lock(keys=[self.store.keys.alert_lock()], args=[token, ttl_ms])
        return bool(got), int(sec) + int(usec) / 1e6
