"""policies.toml mistakes as one line: the file's line number, the key, and what to write.

Kept apart from config.py (the sections) because finding a key's line in TOML text and
wording pydantic's errors for a school technician is its own job.
"""

from __future__ import annotations

import difflib
import json
import re

from pydantic import BaseModel, ValidationError

_TYPE_WORDS = {
    "int": "a whole number, e.g. 30",
    "float": "a number, e.g. 60",
    "bool": "true or false (no quotes)",
    "string": 'text in quotes, e.g. "Manby Lodge"',
    "list": 'a list in square brackets, e.g. ["a", "b"]',
    "dict": "a table",
    "model": "a table",
    "path": 'a file path in quotes, e.g. "rosters/parents.csv"',
}


def syntax_message(name: str, error: str) -> str:
    found = re.search(r"\(at line (\d+), column (\d+)\)", error)
    problem = re.sub(r"\s*\(at line \d+, column \d+\)", "", error).rstrip(".")
    where = f" line {found.group(1)}" if found else ""
    column = f" column {found.group(2)}" if found else ""
    return (f"{name}{where}: TOML syntax error at{column or ' the end'}: {problem}; "
            "check quotes, brackets and that each setting reads key = value")


def _key_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_message(name: str, text: str, exc: ValidationError,
                       model: type[BaseModel]) -> str:
    """One line for the first thing pydantic refused: where, what, and what to write."""
    errors = exc.errors(include_url=False)
    error = next((e for e in errors if e["type"] != "missing"), errors[0])
    loc = tuple(part for part in error["loc"] if part not in ("function-after",))
    line = find_line(text, loc)
    where = f"{name} line {line}" if line else name
    key = _key_path(loc)
    kind = error["type"]
    value = error.get("input")
    shown = json.dumps(value, ensure_ascii=False, default=str) if _is_scalar(value) else ""
    if kind == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if loc[:1] == ("rules",) and len(loc) == 2:
            hint = f'did you mean "{close[0]}"? ' if close else ""
            return f"{where}: rules.{loc[1]} is not a rule id; {hint}rule ids: {', '.join(known)}"
        hint = f'did you mean "{close[0]}"' if close else f"known keys: {', '.join(known)}"
        return f"{where}: {key} is not a setting m365guard knows; {hint}"
    if kind == "missing":
        table = _key_path(loc[:-1]) or "the top level"
        return f"{where}: {key} is missing; add {loc[-1]} = ... under [{table}]"
    if kind == "value_error":
        problem = str(error["msg"]).removeprefix("Value error, ")
        return f"{where}: {key} {shown} {problem}"
    if kind == "literal_error":
        return f"{where}: {key} {shown} is not allowed; write one of {error['ctx']['expected']}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than",
                "too_short"):
        return f"{where}: {key} {shown} is out of range: {error['msg'].lower()}"
    expected = next((words for word, words in _TYPE_WORDS.items() if kind.startswith(word)), None)
    if expected is None:
        return f"{where}: {key} {shown}: {error['msg']}"
    return f"{where}: {key} is {shown or 'of the wrong type'}; write {expected}"


def _is_scalar(value: object) -> bool:
    return isinstance(value, str | int | float | bool)


def _known_keys(model: type[BaseModel], table: tuple[str | int, ...]) -> list[str]:
    for part in table:
        field = model.model_fields.get(str(part)) or next(
            (f for f in model.model_fields.values() if f.alias == part), None)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [str(f.alias or n) for n, f in model.model_fields.items()]


_HEADER_RE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")


def _header_parts(header: str) -> tuple[str, ...]:
    return tuple(part.strip().strip('"').strip("'") for part in header.split("."))


def find_line(text: str, loc: tuple[str | int, ...]) -> int | None:
    """The line that holds loc (a key path), found by a line search through the tables."""
    keys = tuple(str(part) for part in loc if not isinstance(part, int))
    index = next((part for part in loc if isinstance(part, int)), None)
    table: tuple[str, ...] = ()
    best: int | None = None
    best_depth = 0
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        header = _HEADER_RE.match(line)
        if header:
            table = _header_parts(header.group(1))
            if table == keys[: len(table)] and len(table) > best_depth:
                best, best_depth = number, len(table)
            continue
        rest = keys[len(table):]
        if table != keys[: len(table)] or not rest:
            continue
        if re.match(rf'^\s*["\']?{re.escape(rest[0])}["\']?\s*[.=]', line):
            best = number
            if index is not None:
                best = _array_item_line(lines, number, index) or number
            break
    return best


def _array_item_line(lines: list[str], start: int, index: int) -> int | None:
    """The line of item `index` in an array that may span lines from `start` on."""
    count = -1
    depth = 0
    for number in range(start, len(lines) + 1):
        line = lines[number - 1]
        body = line.split("=", 1)[1] if number == start else line
        for match in re.finditer(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|[\[\]]|[^\s,\[\]#]+|#.*', body):
            item = match.group(0)
            if item.startswith("#"):
                break
            if item == "[":
                depth += 1
            elif item == "]":
                depth -= 1
                if depth == 0:
                    return None
            elif depth == 1:
                count += 1
                if count == index:
                    return number
    return None
