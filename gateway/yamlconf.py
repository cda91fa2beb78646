"""YAML to plain Python values, remembering the line of every key, with ${VAR} expansion.

PyYAML's node tree keeps source marks; we walk it ourselves so that every later error
(a wrong type, an unknown key, a missing variable) can name the file, line and key path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from .errors import ConfigError

Path = tuple[str | int, ...]

# ${VAR} or ${VAR:-default}; $${ is a literal "${".
_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_STR_TAG = "tag:yaml.org,2002:str"


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class Document:
    """A parsed config file: its values and where each key sits."""

    def __init__(self, data: Any, lines: dict[Path, int], file: str) -> None:
        self.data, self.lines, self.file = data, lines, file

    def line_of(self, path: Path) -> int | None:
        """The line of the deepest known key on `path` (a missing key: its parent's line)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None

    def error(self, message: str, path: Path) -> ConfigError:
        return ConfigError(message, self.file, self.line_of(path), format_path(path))


def expand(text: str, env: Mapping[str, str], where: str = "") -> str:
    """Replace ${VAR} and ${VAR:-default}; an unset or empty ${VAR} without default is an error."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        name, default = m.group(1), m.group(2)
        value = env.get(name, "")
        if value:
            return value
        if default is not None:
            return default
        raise ValueError(
            f"environment variable {name} is not set (set it, or write ${{{name}:-default}})"
        )

    return _VAR.sub(repl, text)


_INT = re.compile(r"-?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(0|[1-9][0-9]*)\.[0-9]+")


def _plain_value(value: str) -> Any:
    """An unquoted `${KEEP:-500}` becomes the number 500, as if written in place.

    Only plain decimals and true/false are read this way: YAML's other forms (0x1f, 0755,
    1_000, 12:30) would silently change a secret or an id that happens to look like one.
    """
    if _INT.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    if value in ("true", "false"):
        return value == "true"
    return value


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 also reads on/off/yes/no (and the
    country code NO) as booleans, which turns `schema: off` into `false`."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load_document(text: str, file: str = "", env: Mapping[str, str] | None = None) -> Document:
    """Parse YAML text into plain values with line numbers; expands ${VAR} from `env`."""
    env = os.environ if env is None else env
    loader = _Loader(text)
    lines: dict[Path, int] = {}
    try:
        node = loader.get_single_node()
        if node is None:
            return Document({}, lines, file)
        data = _build(loader, node, (), lines, env, file)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise ConfigError(f"not valid YAML: {problem}", file, line) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", file) from None
    finally:
        loader.dispose()
    return Document(data, lines, file)


def _build(loader, node, path: Path, lines, env, file) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, MappingNode):
        loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise ConfigError("keys must be strings", file, line, format_path(path))
            if key in out:
                raise ConfigError(
                    f"key `{key}` appears twice in this mapping", file, line, format_path(path)
                )
            lines[(*path, key)] = line
            out[key] = _build(loader, value_node, (*path, key), lines, env, file)
        return out
    if isinstance(node, SequenceNode):
        return [
            _build(loader, item, (*path, i), lines, env, file) for i, item in enumerate(node.value)
        ]
    if isinstance(node, ScalarNode) and node.tag == _STR_TAG and "${" in node.value:
        try:
            value = expand(node.value, env)
        except ValueError as e:
            raise ConfigError(str(e), file, node.start_mark.line + 1, format_path(path)) from None
        if node.style is None:
            return _plain_value(value)
        return value
    return loader.construct_object(node, deep=True)
