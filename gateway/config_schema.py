"""The JSON Schema of config.yaml (`webhook-gateway config-schema`), for editors."""

from __future__ import annotations

import ast
import copy
import inspect
import itertools
import textwrap
from typing import Any, Union

import msgspec

from .config import (
    DURATION_RE,
    SIZE_RE,
    ByteSize,
    Config,
    Duration,
    Secret,
    SourceConfig,
    destination_types,
    source_types,
)
from .ratelimit import LIMIT_RE, Limit

_SCHEMAS = {
    Duration: {
        "anyOf": [
            {"type": "string", "pattern": DURATION_RE.pattern},
            {"type": "number", "minimum": 0},
        ],
        "description": "seconds, or a duration such as 30s, 5m, 12h, 7d",
    },
    ByteSize: {
        "anyOf": [
            {"type": "string", "pattern": SIZE_RE.pattern},
            {"type": "integer", "minimum": 0},
        ],
        "description": "bytes, or a size such as 512KiB, 1MiB",
    },
    Secret: {"type": "string", "description": 'a secret; write it as "${ENV_VAR}"'},
    Limit: {
        "type": "string",
        "pattern": LIMIT_RE.pattern,
        "description": "a rate limit: a count per duration such as 600/1m, 100/s, 50000/1h",
    },
}


def config_schema() -> dict[str, Any]:
    """A JSON Schema of config.yaml, for editors (yaml-language-server, VS Code)."""
    types = tuple(source_types().values())
    outputs = tuple(destination_types().values())
    (root, sources, destinations), defs = msgspec.json.schema_components(
        [Config, dict[str, Union[types]], dict[str, Union[outputs]]],  # noqa: UP007
        schema_hook=_schema_hook,
        ref_template="#/$defs/{name}",
    )
    defs.pop(SourceConfig.__name__, None)
    properties = defs[Config.__name__]["properties"]
    properties["sources"].update(sources)
    properties["destinations"] = {**properties["destinations"], **destinations}
    properties["destinations"]["additionalProperties"] = destinations["additionalProperties"]
    for cls in (Config, *types, *outputs):
        _document(defs.get(cls.__name__), cls)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "webhook-gateway config",
        **root,
        "$defs": defs,
    }


def _schema_hook(tp: type) -> dict[str, Any]:
    try:
        return copy.deepcopy(_SCHEMAS[tp])  # callers add per-field defaults to it
    except KeyError:
        raise NotImplementedError from None


def _document(schema: dict[str, Any] | None, cls: type) -> None:
    """Add the defaults of text-valued fields and the field docstrings to a struct's schema."""
    if not schema:
        return
    props = schema.get("properties", {})
    # Catalog vendors' structs are made at run time: their docs come with them.
    docs = {**_field_docs(cls), **getattr(cls, "field_docs", {})}
    for f in msgspec.structs.fields(cls):
        prop = props.get(f.encode_name)
        if prop is None:
            continue
        shown = getattr(f.default_factory, "shown", None)
        if shown is not None:
            prop["default"] = shown
        if f.name in docs:
            prop["description"] = docs[f.name]


def _field_docs(cls: type) -> dict[str, str]:
    """Field docstrings (a string literal right below the field), read from the source."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not issubclass(klass, msgspec.Struct) or klass is msgspec.Struct:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(getattr(nxt, "value", None), ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs
