"""YAML mapping rules: teams map a vendor's payloads to events without writing Python.

Every value in a rule is a JMESPath expression (https://jmespath.org), compiled once and
evaluated against the payload, plus the functions in FUNCTIONS below. A plain dotted
path (`data.object.id`) takes a fast path with the same result as JMESPath. `event` and
`type` are literal text. Rules are tried in order; the first whose `when` is true makes
the events (`builtin: true` keeps the built-in normalizer's events too, `drop: true`
makes none); when no rule matches, the source type's built-in normalizer runs.
"""

from __future__ import annotations

import contextvars
import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jmespath
import msgspec
from jmespath import exceptions as jmespath_errors
from jmespath import functions

from .base import Draft, NormalizeError, Person, title
from .event import iso_time
from .money import currency_code, stripe_amount, to_major

EventType = Literal["track", "identify", "group", "page", "screen", "alias"]


class EventSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One event a rule emits. Values are JMESPath, except `event` and `type` (literal)."""

    event: str | None = None
    """The event name (track), literal text: `Form Submitted`."""
    type: EventType = "track"
    for_each: str | None = None
    """Emit one event per element of this list; inside, `@` is the element, `root()` the payload."""
    timestamp: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    name: str | None = None
    properties: dict[str, Any] = {}
    """Property name -> expression (or a nested mapping of them, or a number/bool constant)."""
    traits: dict[str, Any] = {}


class MappingRule(EventSpec, kw_only=True, forbid_unknown_fields=True):
    when: str = "`true`"
    """Applies when this expression is truthy (JMESPath truthiness)."""
    events: list[EventSpec] = []
    """Several events from one delivery; without it the rule itself is the one event."""
    builtin: bool = False
    """Also emit the built-in normalizer's events (before this rule's)."""
    drop: bool = False
    """Emit nothing for matching deliveries (on purpose, not by accident)."""


class MappingTest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A named example: a payload (inline or a file) and the events it must become."""

    name: str
    payload: Any = None
    payload_file: str | None = None
    """Path relative to the config file."""
    headers: dict[str, str] = {}
    expect: list[dict[str, Any]] = []
    """Expected events, each a subset of the actual one (keys not given are not checked)."""


# --- evaluation context: what header() and root() see ------------------------------------

_PAYLOAD: contextvars.ContextVar[Any] = contextvars.ContextVar("payload", default=None)
_HEADERS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "headers", default=None
)


class Functions(functions.Functions):
    """The custom functions mappings may call (besides JMESPath's own).

    They take arguments of any type and answer null for ones they cannot use (rather than
    failing the whole delivery), and the plain-Python evaluator calls them directly.
    """

    @functions.signature({"types": []}, {"types": []})
    def _func_money(self, amount: Any, currency: Any) -> Any:
        """money(amount, currency): minor units -> major units with ISO 4217's exponent."""
        return to_major(amount, currency)

    @functions.signature({"types": []}, {"types": []})
    def _func_stripe_money(self, amount: Any, currency: Any) -> Any:
        """stripe_money(amount, currency): as money(), with Stripe's exceptions (ISK, HUF...)."""
        return stripe_amount(amount, currency)

    @functions.signature({"types": []})
    def _func_currency(self, value: Any) -> Any:
        """currency(code): upper-case ISO 4217 (`usd` -> `USD`)."""
        return currency_code(value)

    @functions.signature({"types": []})
    def _func_iso_time(self, value: Any) -> Any:
        """iso_time(t): ISO 8601 UTC from unix seconds, milliseconds or ISO text."""
        return iso_time(value)

    @functions.signature({"types": []})
    def _func_lower(self, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else None

    @functions.signature({"types": []})
    def _func_upper(self, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else None

    @functions.signature({"types": []})
    def _func_title(self, value: Any) -> Any:
        """title(text): `invoice.paid` -> `Invoice Paid`."""
        return title(value) if isinstance(value, str) else None

    @functions.signature({"types": []})
    def _func_sha256(self, value: Any) -> Any:
        """sha256(text): hex digest of the text (UTF-8); other values as their JSON text."""
        if value is None:
            return None
        data = value.encode() if isinstance(value, str) else msgspec.json.encode(value)
        return hashlib.sha256(data).hexdigest()

    @functions.signature({"types": [], "variadic": True})
    def _func_coalesce(self, *values: Any) -> Any:
        """coalesce(a, b, ...): the first value that is not null or an empty string."""
        return next((v for v in values if v is not None and v != ""), None)

    @functions.signature({"types": []})
    def _func_header(self, name: Any) -> Any:
        """header(name): a request header of the delivery (any case), or null."""
        if not isinstance(name, str):
            return None
        return (_HEADERS.get() or {}).get(name.lower())

    @functions.signature()
    def _func_root(self) -> Any:
        """root(): the whole payload (inside for_each, where @ is the element)."""
        return _PAYLOAD.get()


FUNCTIONS = Functions()
_OPTIONS = jmespath.Options(custom_functions=FUNCTIONS)
_BUILTIN_FUNCTIONS = set(functions.Functions.FUNCTION_TABLE)  # type: ignore[attr-defined]
_KNOWN_FUNCTIONS = set(Functions.FUNCTION_TABLE)  # type: ignore[attr-defined]
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

Expression = Callable[[Any], Any]


class MappingError(ValueError):
    """A rule that cannot work: names the key path inside the source's mappings."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


def compile_expression(text: str, path: str) -> Expression:
    """A callable evaluating `text`; MappingError (with `path`) for a bad expression."""
    if not isinstance(text, str):
        return lambda _data, value=text: value  # a YAML number or boolean: a constant
    text = text.strip()  # YAML block scalars end with a newline
    if _DOTTED.fullmatch(text):
        keys = tuple(text.split("."))
        return lambda data: _walk(data, keys)
    try:
        parsed = jmespath.compile(text)
    except jmespath_errors.IncompleteExpressionError:
        raise MappingError("not a valid JMESPath expression (it ends too early)", path) from None
    except jmespath_errors.ParseError as e:
        where = (
            "it ends too early"
            if e.token_type in ("eof", None)
            else f"unexpected {e.token_value!r} at column {e.lex_position + 1}"
        )
        raise MappingError(f"not a valid JMESPath expression ({where})", path) from None
    except jmespath_errors.JMESPathError as e:
        raise MappingError(f"not a valid JMESPath expression: {e}", path) from None
    _check_functions(parsed.parsed, path)
    fast = _fast(parsed.parsed)
    if fast is not None:
        return fast
    return lambda data: parsed.search(data, options=_OPTIONS)


# Our own functions accept any argument types (and return null for ones they cannot use),
# so calls to them need not go through JMESPath's type checks.
_FAST_FUNCTIONS = {
    name: getattr(FUNCTIONS, f"_func_{name}")
    for name in (
        "money",
        "stripe_money",
        "currency",
        "iso_time",
        "lower",
        "upper",
        "title",
        "sha256",
        "coalesce",
        "header",
        "root",
    )
}


def _fast(node: dict[str, Any]) -> Expression | None:
    """A plain-Python evaluator for the common shapes of expression, else None.

    Fields, dotted paths, literals, calls of our own functions, ==/!= and and/or/not:
    the same results as JMESPath (hypothesis checks it), at a fraction of the cost.
    """
    kind = node["type"]
    children = node.get("children", [])
    if kind == "field":
        name = node["value"]
        return lambda data: data.get(name) if isinstance(data, dict) else None
    if kind == "subexpression" and all(c["type"] == "field" for c in children):
        keys = tuple(c["value"] for c in children)
        return lambda data: _walk(data, keys)
    if kind == "literal":
        value = node["value"]
        return lambda _data: value
    if kind == "current":
        return lambda data: data
    parts = [_fast(c) for c in children]
    if any(p is None for p in parts):
        return None
    if kind == "function_expression" and node["value"] in _FAST_FUNCTIONS:
        fn = _FAST_FUNCTIONS[node["value"]]
        if len(parts) == 1:
            [one] = parts
            return lambda data: fn(one(data))  # type: ignore[misc]
        if len(parts) == 2:
            first, second = parts
            return lambda data: fn(first(data), second(data))  # type: ignore[misc]
        return lambda data: fn(*[p(data) for p in parts])  # type: ignore[misc]
    if kind == "comparator" and node["value"] in ("eq", "ne"):
        left, right = parts
        if node["value"] == "eq":
            return lambda data: _equal(left(data), right(data))  # type: ignore[misc]
        return lambda data: not _equal(left(data), right(data))  # type: ignore[misc]
    if kind == "and_expression":
        left, right = parts

        def both(data: Any) -> Any:
            first = left(data)  # type: ignore[misc]
            return right(data) if _truthy(first) else first  # type: ignore[misc]

        return both
    if kind == "or_expression":
        left, right = parts

        def either(data: Any) -> Any:
            first = left(data)  # type: ignore[misc]
            return first if _truthy(first) else right(data)  # type: ignore[misc]

        return either
    if kind == "not_expression":
        [inner] = parts
        return lambda data: not _truthy(inner(data))  # type: ignore[misc]
    return None


def _equal(x: Any, y: Any) -> bool:
    """Equality exactly as the jmespath package has it: 0 and 1 are not false and true
    (deeper inside lists and objects it is Python's ==, as there)."""
    if _number(x) and x in (0, 1):
        return not isinstance(y, bool) and x == y
    if _number(y) and y in (0, 1):
        return not isinstance(x, bool) and x == y
    return bool(x == y)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _walk(data: Any, keys: tuple[str, ...]) -> Any:
    # Indexing raises for every non-object on the way (a list, a string, null), which is
    # when JMESPath gives null too; the common case (all there) costs no checks.
    try:
        for key in keys:
            data = data[key]
    except (KeyError, TypeError, IndexError):
        return None
    return data


def _check_functions(node: Any, path: str) -> None:
    """Unknown functions and wrong argument counts are config errors, not runtime ones."""
    if isinstance(node, dict):
        if node.get("type") == "function_expression":
            name = node.get("value")
            if name not in _KNOWN_FUNCTIONS:
                custom = sorted(_KNOWN_FUNCTIONS - _BUILTIN_FUNCTIONS)
                raise MappingError(
                    f"unknown function {name}() (JMESPath's own, or one of: "
                    f"{', '.join(f + '()' for f in custom)})",
                    path,
                )
            signature = Functions.FUNCTION_TABLE[name]["signature"]  # type: ignore[attr-defined]
            given = len(node.get("children", []))
            variadic = int(bool(signature and signature[-1].get("variadic")))
            if (given < len(signature) - variadic) or (not variadic and given != len(signature)):
                raise MappingError(
                    f"{name}() takes {len(signature)} argument(s), not {given}", path
                )
            if name == "header" and _header_name(node) is None:
                # The front door stores only the headers a source keeps; it keeps the ones
                # its mappings name, which it can know only if the name is written out.
                raise MappingError(
                    "header() needs the header's name as quoted text, e.g. "
                    "header('X-Event-Kind'): the source keeps only the headers its mappings "
                    "name, so a computed name would find nothing in the live worker",
                    path,
                )
        for child in node.get("children", []):
            _check_functions(child, path)


def _header_name(node: dict[str, Any]) -> str | None:
    """The literal name in a `header('...')` call node, else None."""
    [arg] = node.get("children", [None])
    if isinstance(arg, dict) and arg.get("type") == "literal" and isinstance(arg["value"], str):
        return arg["value"]
    return None


def _header_names(node: Any, found: dict[str, None]) -> None:
    if isinstance(node, dict):
        if node.get("type") == "function_expression" and node.get("value") == "header":
            name = _header_name(node) if len(node.get("children", [])) == 1 else None
            if name:
                found[name.lower()] = None
        for child in node.get("children", []):
            _header_names(child, found)


_EXPRESSION_KEYS = ("for_each", "timestamp", "user_id", "anonymous_id", "group_id")
_EXPRESSION_KEYS += ("previous_id", "name")


def headers_used(rules: list[MappingRule], user_id: str | None = None) -> tuple[str, ...]:
    """Lower-case names of the request headers the rules and `user_id:` read with header().

    A source keeps these with each delivery, so the worker's mappings see what `map` and
    `test` see. (Expressions that do not compile are left to `Mapper`, which says why.)
    """
    texts: list[Any] = [user_id]
    for rule in rules:
        texts.append(rule.when)
        for spec in (rule, *rule.events):
            texts += [getattr(spec, key) for key in _EXPRESSION_KEYS]
            texts += _leaves(spec.properties) + _leaves(spec.traits)
    found: dict[str, None] = {}
    for text in texts:
        if isinstance(text, str) and "header" in text:
            try:
                parsed = jmespath.compile(text.strip())
            except jmespath_errors.JMESPathError:
                continue
            _header_names(parsed.parsed, found)
    return tuple(found)


def _leaves(tree: dict[str, Any]) -> list[Any]:
    return [x for v in tree.values() for x in (_leaves(v) if isinstance(v, dict) else [v])]


class CompiledEvent:
    def __init__(self, spec: EventSpec, path: str) -> None:
        self.event = spec.event
        self.type = spec.type
        if spec.type == "track" and not spec.event:
            raise MappingError("a track event needs `event:` (its name)", path)
        if spec.type != "track" and spec.event:
            raise MappingError(
                f"`event:` names track events; a {spec.type} event has none "
                "(remove it, or use type: track)",
                path,
            )
        self.for_each = (
            compile_expression(spec.for_each, f"{path}.for_each") if spec.for_each else None
        )
        self.fields = {
            key: compile_expression(getattr(spec, key), f"{path}.{key}")
            for key in ("timestamp", "user_id", "anonymous_id", "group_id", "previous_id", "name")
            if getattr(spec, key) is not None
        }
        self.properties = _compile_tree(spec.properties, f"{path}.properties")
        self.traits = _compile_tree(spec.traits, f"{path}.traits")

    def drafts(self, payload: Any, event_type: str | None) -> list[Draft]:
        if self.for_each is None:
            return [self._draft(payload, event_type)]
        items = self.for_each(payload)
        if not isinstance(items, list):
            # Null is most often a typo in the path: say so rather than emit nothing.
            found = "nothing" if items is None else f"a {type(items).__name__}"
            raise NormalizeError(f"for_each found {found}, not a list")
        return [self._draft(item, event_type) for item in items]

    def _draft(self, data: Any, event_type: str | None) -> Draft:
        values = {key: fn(data) for key, fn in self.fields.items()}
        person = Person(user_id=values["user_id"]) if "user_id" in values else None
        return Draft(
            event=self.event,
            type=self.type,
            properties=_evaluate_tree(self.properties, data),
            traits=_evaluate_tree(self.traits, data),
            timestamp=values.get("timestamp"),
            event_type=event_type,
            person=person,
            group_id=values.get("group_id"),
            name=values.get("name"),
            previous_id=values.get("previous_id"),
            anonymous_id=values.get("anonymous_id"),
        )


def _compile_tree(tree: dict[str, Any], path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out[key] = _compile_tree(value, f"{path}.{key}")
        elif isinstance(value, list):
            raise MappingError(
                "a list is not an expression (write a JMESPath list, e.g. [a, b])", f"{path}.{key}"
            )
        else:
            out[key] = compile_expression(value, f"{path}.{key}")
    return out


def _evaluate_tree(tree: dict[str, Any], data: Any) -> dict[str, Any]:
    return {
        key: _evaluate_tree(fn, data) if isinstance(fn, dict) else fn(data)
        for key, fn in tree.items()
    }


class CompiledRule:
    def __init__(self, rule: MappingRule, path: str) -> None:
        self.when = compile_expression(rule.when, f"{path}.when")
        self.builtin = rule.builtin
        self.drop = rule.drop
        if rule.drop and (rule.events or rule.event):
            raise MappingError("a `drop: true` rule emits nothing: remove its events", path)
        inline = [
            k
            for k in (
                "event",
                "for_each",
                "timestamp",
                "user_id",
                "anonymous_id",
                "group_id",
                "previous_id",
                "name",
                "properties",
                "traits",
            )
            if getattr(rule, k)
        ]
        if rule.events and inline:
            raise MappingError(
                f"write the event either in the rule or under `events:`, not both "
                f"(move {', '.join(inline)} into the events)",
                path,
            )
        specs: list[EventSpec]
        if rule.events:
            specs = list(rule.events)
        elif rule.drop:
            specs = []
        elif rule.event is not None or rule.type != "track" or rule.properties or rule.traits:
            specs = [rule]
        elif rule.builtin:
            specs = []  # "for these, the built-in normalizer": stops later rules
        else:
            raise MappingError(
                "a rule needs `event:` (or `events:`, `builtin: true` or `drop: true`)", path
            )
        self.events = [
            CompiledEvent(spec, f"{path}.events[{i}]" if rule.events else path)
            for i, spec in enumerate(specs)
        ]


class Mapper:
    """A source's compiled rules (and its `user_id:` expression)."""

    def __init__(self, rules: list[MappingRule], user_id: str | None = None) -> None:
        self.rules = [CompiledRule(r, f"mappings[{i}]") for i, r in enumerate(rules)]
        self.user_id = compile_expression(user_id, "user_id") if user_id else None
        # The request headers these rules read (the source keeps them with each delivery).
        self.headers = headers_used(rules, user_id)

    @staticmethod
    def enter(payload: Any, headers: Mapping[str, str]) -> tuple[Any, Any]:
        """Make this delivery what header() and root() see; `leave()` with the result.

        (Not a context manager: this runs for every delivery, and a generator-based one
        costs more than the rest of a short mapping.)
        """
        return _PAYLOAD.set(payload), _HEADERS.set(headers)

    @staticmethod
    def leave(tokens: tuple[Any, Any]) -> None:
        _PAYLOAD.reset(tokens[0])
        _HEADERS.reset(tokens[1])

    def match(self, payload: Any) -> CompiledRule | None:
        """The first rule whose `when` holds (call between `enter()` and `leave()`)."""
        return next((r for r in self.rules if _truthy(r.when(payload))), None)

    def drafts(self, rule: CompiledRule, payload: Any, event_type: str | None) -> list[Draft]:
        """The rule's events for this payload (call between `enter()` and `leave()`)."""
        return [d for event in rule.events for d in event.drafts(payload, event_type)]

    def own_user_id(self, payload: Any) -> Any:
        """The source's `user_id:` for this payload (call between `enter()` and `leave()`)."""
        return self.user_id(payload) if self.user_id is not None else None


def _truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, "", [] and {} are false; 0 is true."""
    return not (value is None or value is False or value == "" or value == [] or value == {})
