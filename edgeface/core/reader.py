"""The one reader of the files the device trusts: bundle manifests, galleries, config files, secrets.

Each is read the same way: a regular file of bounded size (``edgeface.core.fileio.read_input``), UTF-8,
parsed with its nesting depth bounded (Python's JSON and TOML parsers recurse: 100,000 nested brackets were a
``RecursionError`` nobody caught; TOML's dotted keys nest without brackets), then checked field by field
with a :class:`Table`. Every failure is the caller's ``EdgefaceError`` subclass with one line naming the file
and the field, and a value that is not shown when the field is a secret.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NoReturn, TypeVar

from edgeface.core.errors import EdgefaceError
from edgeface.core.fileio import read_text_input

# Deeper than any file edgeface writes (a gallery is 4 levels deep, a manifest 4, a config 2), shallow
# enough that the parsers never come near Python's recursion limit.
MAX_DEPTH = 32
MAX_TEXT = 4096  # characters of a text field, unless the field says otherwise
SHA256_HEX = re.compile(r"[0-9a-f]{64}")

_MISSING: Any = object()
T = TypeVar("T")


_CONTAINERS = frozenset((dict, list))


def _depth_of(value: Any) -> int:
    """Nesting depth of a parsed value, without recursion (TOML's dotted keys nest without brackets)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        if _CONTAINERS.isdisjoint(set(map(type, children))):  # at C speed: a row of numbers has nothing inside
            continue
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _too_deep(where: str, error: type[EdgefaceError]) -> NoReturn:
    raise error(f"{where}: nested more than {MAX_DEPTH} levels deep: not a file edgeface wrote")


def parse_json(text: str | bytes, where: str, error: type[EdgefaceError]) -> Any:
    """JSON text, parsed with its depth bounded (the parser's own recursion stops on a hostile file, then the
    parsed value is measured); NaN and infinities are read: checks refuse them where a number must be finite,
    with a message naming the field."""
    import json

    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise error(f"{where}: not UTF-8 text (byte 0x{text[exc.start]:02x} at offset {exc.start})") from None
    return _parse(json.loads, json.JSONDecodeError, "JSON", text, where, error)


def parse_toml(text: str, where: str, error: type[EdgefaceError]) -> dict[str, Any]:
    """TOML text, parsed with its depth bounded (brackets and dotted keys alike). The depth is measured
    before parsing too: Python's TOML parser takes time quadratic in a dotted key's length (20,000 parts:
    14 s)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 (tomli is a dependency there)
        import tomli as tomllib

    if toml_depth(text) > MAX_DEPTH:
        _too_deep(where, error)

    return _parse(tomllib.loads, tomllib.TOMLDecodeError, "TOML", text, where, error)


_TOML_BARE = re.compile(r"[A-Za-z0-9_+-]+")
_TOML_STRINGS = {
    '"""': re.compile(r'"""(?:[^\\]|\\.)*?"""', re.DOTALL),
    "'''": re.compile(r"'''.*?'''", re.DOTALL),
    '"': re.compile(r'"(?:[^"\\\n]|\\.)*"'),
    "'": re.compile(r"'[^'\n]*'"),
}


def toml_depth(text: str) -> int:
    """How deep TOML text nests, in one linear pass without parsing: brackets and braces, and the parts of
    dotted keys (``a.b.c``). Strings and comments are skipped; the pass stops where a string does not end
    (the parser stops there too) or as soon as the depth passes ``MAX_DEPTH``."""
    depth = deepest = dots = 0
    after_part = False  # the last token was a key part (a bare word or a string): a dot continues the key
    i, end = 0, len(text)
    while i < end and deepest <= MAX_DEPTH:
        char = text[i]
        if char in " \t":
            i += 1
            continue
        if char == "#":
            i = text.find("\n", i)
            i = end if i < 0 else i
            continue
        if char in "\"'":
            quote = char * 3 if text.startswith(char * 3, i) else char
            match = _TOML_STRINGS[quote].match(text, i)
            if match is None:
                break
            i, after_part = match.end(), True
            continue
        bare = _TOML_BARE.match(text, i)
        if bare is not None:
            i, after_part = bare.end(), True
            continue
        if char == "." and after_part:
            dots += 1
            deepest = max(deepest, depth + dots)
        else:
            dots = 0
            if char in "[{":
                depth += 1
                deepest = max(deepest, depth)
            elif char in "]}":
                depth -= 1
        after_part = False
        i += 1
    return deepest


def _parse(parse: Callable[[str], Any], invalid: type[Exception], language: str, text: str, where: str,
           error: type[EdgefaceError]) -> Any:
    try:
        value = parse(text)
    except (invalid, ValueError) as exc:  # ValueError: an integer of more than 4,300 digits
        raise error(f"{where}: not valid {language} ({shown(str(exc), 200)[1:-1]})") from None
    except RecursionError:  # the parser's own recursion, stopped by Python's limit: nothing is left half-done
        _too_deep(where, error)
    if _depth_of(value) > MAX_DEPTH:
        _too_deep(where, error)
    return value


def read_json(path: str | Path, limit: int, error: type[EdgefaceError], what: str = "file") -> Any:
    """A JSON file: a regular file of at most ``limit`` bytes, UTF-8, bounded in depth."""
    return parse_json(read_text_input(path, limit, error, what), str(path), error)


def read_toml(path: str | Path, limit: int, error: type[EdgefaceError], what: str = "file") -> dict[str, Any]:
    """A TOML file: a regular file of at most ``limit`` bytes, UTF-8, bounded in depth."""
    return parse_toml(read_text_input(path, limit, error, what), str(path), error)


def kind_of(value: Any) -> str:
    """What a parsed value is, in the words of its file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def shown(value: Any, limit: int = 40) -> str:
    """A value as a message shows it: its repr, cut to ``limit`` characters."""
    if isinstance(value, (dict, list)):
        return kind_of(value)
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def text_problem(value: str, max_length: int = MAX_TEXT) -> str | None:
    """Why a text field is refused (too long, control characters), or None."""
    if len(value) > max_length:
        return f"is longer than {max_length:,} characters"
    if any(ord(c) < 32 and c not in "\t" or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in value):
        return "contains control characters"
    return None


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


class Table:
    """A table (a JSON object, a TOML table) of a file, checked field by field.

    Each accessor takes one field, checks its type and range, and returns it; a problem is one ``error`` line
    ``<file>: <field> = <value>: <what it must be>``, the value left out for ``secret`` fields. Fields not
    asked for are ignored unless ``only`` is called: a newer edgeface may add fields a reader of this one
    does not need.
    """

    def __init__(self, raw: Any, where: str, error: type[EdgefaceError], name: str = "") -> None:
        self.where, self.error, self.name = where, error, name
        if not isinstance(raw, dict):
            self._refuse_whole(raw, "a table")
        self.raw: dict[str, Any] = raw

    def _refuse_whole(self, raw: Any, wanted: str) -> NoReturn:
        subject = self.name or ("the file" if self.where else "it")
        raise self.error(f"{_prefix(self.where)}{subject} must be {wanted}, not {kind_of(raw)}")

    def label(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.name}[{key}]"
        return f"{self.name}.{key}" if self.name else key

    def fail(self, key: str | int, problem: str, value: Any = _MISSING, secret: bool = False) -> NoReturn:
        """Raise the one-line error for ``key``: ``problem`` says what the value must be."""
        shown_value = "" if value is _MISSING or secret else f" = {shown(value)}"
        raise self.error(f"{_prefix(self.where)}{self.label(key)}{shown_value}: {problem}")

    def __contains__(self, key: str) -> bool:
        return key in self.raw

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The raw value of ``key``; without a default, a missing field is refused."""
        if key in self.raw:
            return self.raw[key]
        if default is _MISSING:
            self.fail(key, "is missing")
        return default

    def only(self, known: Any) -> None:
        """Refuse any field not in ``known``."""
        unknown = [k for k in self.raw if k not in known]
        if unknown:
            self.fail(unknown[0], f"is not a known field (known: {', '.join(known)})")

    def number(self, key: str, low: float = -math.inf, high: float = math.inf, default: Any = _MISSING,
               none: bool = False) -> Any:
        """A finite number in [``low``, ``high``] (an integer is a number; true and false are not)."""
        value = self.get(key, default)
        if value is default and key not in self.raw or value is None and none:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low <= value <= high:
            self.fail(key, f"must be a number in [{low:g}, {high:g}]", value)
        return float(value)

    def integer(self, key: str, low: int, high: int, default: Any = _MISSING) -> Any:
        value = self.get(key, default)
        if value is default and key not in self.raw:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(key, f"must be a whole number in [{low:,}, {high:,}]", value)
        return value

    def text(self, key: str, max_length: int = MAX_TEXT, pattern: re.Pattern[str] | None = None,
             describe: str = "", default: Any = _MISSING, none: bool = False, secret: bool = False) -> Any:
        """Text of at most ``max_length`` characters, without control characters; with ``pattern``, matching
        it whole (``describe`` says what it is, for the message)."""
        value = self.get(key, default)
        if value is default and key not in self.raw or value is None and none:
            return value
        if not isinstance(value, str):
            self.fail(key, f"must be text, not {kind_of(value)}", value, secret)
        problem = text_problem(value, max_length)
        if problem:
            self.fail(key, problem, value, secret)
        if pattern is not None and not pattern.fullmatch(value):
            self.fail(key, f"must be {describe or 'of the form ' + pattern.pattern}", value, secret)
        return value

    def choice(self, key: str, choices: tuple[Any, ...], default: Any = _MISSING) -> Any:
        value = self.get(key, default)
        if value is default and key not in self.raw:
            return value
        if isinstance(value, bool) or value not in choices:
            self.fail(key, f"must be one of {', '.join(map(str, choices))}", value)
        return value

    def table(self, key: str, default: Any = _MISSING) -> "Table":
        """A nested table (a missing one is ``default``, e.g. ``{}``)."""
        value = self.get(key, default)
        return Table(value, self.where, self.error, self.label(key))

    def items(self, key: str, max_items: int, default: Any = _MISSING) -> "Items":
        """A list of at most ``max_items`` values."""
        value = self.get(key, default)
        return Items(value, self.where, self.error, self.label(key), max_items)


class Items:
    """A list of a file, checked like :class:`Table` (its elements are named ``list[i]``)."""

    def __init__(self, raw: Any, where: str, error: type[EdgefaceError], name: str, max_items: int) -> None:
        self.where, self.error, self.name = where, error, name
        if not isinstance(raw, (list, tuple)):
            raise error(f"{_prefix(where)}{name} must be a list, not {kind_of(raw)}")
        if len(raw) > max_items:
            raise error(f"{_prefix(where)}{name} has {len(raw):,} entries, more than the {max_items:,} it may have")
        self.raw: list[Any] = list(raw)

    def __len__(self) -> int:
        return len(self.raw)

    def label(self, index: int) -> str:
        return f"{self.name}[{index}]"

    def fail(self, index: int, problem: str, value: Any = _MISSING) -> NoReturn:
        shown_value = "" if value is _MISSING else f" = {shown(value)}"
        raise self.error(f"{_prefix(self.where)}{self.label(index)}{shown_value}: {problem}")

    def tables(self) -> Iterator[Table]:
        for index, value in enumerate(self.raw):
            yield Table(value, self.where, self.error, self.label(index))

    def texts(self, max_length: int = MAX_TEXT) -> list[str]:
        out = []
        for index, value in enumerate(self.raw):
            if not isinstance(value, str):
                self.fail(index, f"must be text, not {kind_of(value)}", value)
            problem = text_problem(value, max_length)
            if problem:
                self.fail(index, problem, value)
            out.append(value)
        return out

    def each(self, check: Callable[[Any, str], T]) -> list[T]:
        """``check(value, label)`` for every element."""
        return [check(value, self.label(index)) for index, value in enumerate(self.raw)]


__all__ = ["MAX_DEPTH", "SHA256_HEX", "Items", "Table", "kind_of", "parse_json", "parse_toml",
           "read_json", "read_toml", "shown", "text_problem"]
