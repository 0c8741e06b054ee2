"""Command-line parsing the way ostree's (GLib GOption) does it.

Options and positional arguments may be mixed in any order, `--name=value` and `--name value` are both
accepted, short options may be clustered (`-RX`, `-bmain`), a repeated string option keeps its last value
and an array option collects every value. `--` ends the options (ostree drops the first one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from strata.errors import InvalidInputError


class Arg(Enum):
    NONE = "none"
    STRING = "string"
    ARRAY = "array"
    INT = "int"


@dataclass(frozen=True)
class Option:
    long: str
    short: str = ""
    arg: Arg = Arg.NONE


def flag(long: str, short: str = "") -> Option:
    return Option(long, short, Arg.NONE)


def string(long: str, short: str = "") -> Option:
    return Option(long, short, Arg.STRING)


def array(long: str, short: str = "") -> Option:
    return Option(long, short, Arg.ARRAY)


def integer(long: str, short: str = "") -> Option:
    return Option(long, short, Arg.INT)


GLOBAL_OPTIONS = (flag("version"), flag("verbose", "v"), flag("help", "h"))


@dataclass
class Parsed:
    """Option values by long name, and the positional arguments in order."""

    values: dict[str, Any] = field(default_factory=dict)
    positional: list[str] = field(default_factory=list)

    def flag(self, name: str) -> bool:
        return bool(self.values.get(name, False))

    def string(self, name: str) -> str | None:
        value = self.values.get(name)
        return None if value is None else str(value)

    def strings(self, name: str) -> list[str]:
        return list(self.values.get(name, []))

    def number(self, name: str, default: int) -> int:
        value = self.values.get(name)
        return default if value is None else int(value)


def parse(argv: Sequence[str], options: Sequence[Option]) -> Parsed:
    """Parse argv (without the program and verb names) against options plus ostree's global ones."""
    table = [*options, *GLOBAL_OPTIONS]
    by_long = {opt.long: opt for opt in table}
    by_short = {opt.short: opt for opt in table if opt.short}
    parsed = Parsed()
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            parsed.positional.extend(args[index:])
            break
        if arg.startswith("--"):
            index = _long_option(arg, args, index, by_long, parsed)
        elif arg.startswith("-") and len(arg) > 1:
            index = _short_options(arg, args, index, by_short, parsed)
        else:
            parsed.positional.append(arg)
    return parsed


def _long_option(arg: str, args: list[str], index: int, by_long: dict[str, Option], parsed: Parsed) -> int:
    name, has_value, value = arg[2:].partition("=")
    opt = by_long.get(name)
    if opt is None:
        raise InvalidInputError(f"Unknown option {arg.split('=', 1)[0]}")
    if opt.arg is Arg.NONE:
        if has_value:
            raise InvalidInputError(f"Unexpected argument for {arg}")
        parsed.values[opt.long] = True
        return index
    if not has_value:
        if index >= len(args):
            raise InvalidInputError(f"Missing argument for --{name}")
        value = args[index]
        index += 1
    _store(opt, f"--{name}", value, parsed)
    return index


def _short_options(arg: str, args: list[str], index: int, by_short: dict[str, Option], parsed: Parsed) -> int:
    letters = arg[1:]
    for position, letter in enumerate(letters):
        opt = by_short.get(letter)
        if opt is None:
            raise InvalidInputError(f"Unknown option -{letter}")
        if opt.arg is Arg.NONE:
            parsed.values[opt.long] = True
            continue
        rest = letters[position + 1:]
        if rest:
            value = rest
        elif index < len(args):
            value = args[index]
            index += 1
        else:
            raise InvalidInputError(f"Missing argument for -{letter}")
        _store(opt, f"-{letter}", value, parsed)
        return index
    return index


def _store(opt: Option, spelled: str, value: str, parsed: Parsed) -> None:
    if opt.arg is Arg.ARRAY:
        parsed.values.setdefault(opt.long, []).append(value)
    elif opt.arg is Arg.INT:
        try:
            parsed.values[opt.long] = int(value.strip())
        except ValueError:
            raise InvalidInputError(f"Cannot parse integer value “{value}” for {spelled}") from None
    else:
        parsed.values[opt.long] = value
