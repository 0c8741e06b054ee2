"""GLib key files (repo config, origin files, BLS-like ini): order-preserving read and write."""

from __future__ import annotations

import os
from pathlib import Path

from strata.errors import CorruptionError
from strata.image.fsutil import atomic_write

_MAX_SIZE = 1 << 20  # repo configs and origin files are a few hundred bytes


class KeyFile:
    """Groups of key=value lines; groups and keys keep the order they were read or added in."""

    def __init__(self) -> None:
        self.groups: dict[str, dict[str, str]] = {}

    @classmethod
    def parse(cls, text: str, source: str = "key file") -> KeyFile:
        kf = cls()
        current: dict[str, str] | None = None
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = kf.groups.setdefault(line[1:-1], {})
                continue
            if current is None or "=" not in line:
                raise CorruptionError(f"{source}: line {lineno} is not valid: {raw[:80]!r}")
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
        return kf

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyFile:
        return cls.parse_bytes(Path(path).read_bytes(), str(path))

    @classmethod
    def parse_bytes(cls, data: bytes, source: str = "key file") -> KeyFile:
        """A key file as stored; GLib's are UTF-8 text, so anything else is refused in one line."""
        if len(data) > _MAX_SIZE:
            raise CorruptionError(f"{source}: larger than {_MAX_SIZE} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptionError(f"{source}: not UTF-8 text (byte {exc.start})") from None
        if "\0" in text:
            raise CorruptionError(f"{source}: contains a NUL byte")
        return cls.parse(text, source)

    def serialize(self) -> str:
        blocks = []
        for name, entries in self.groups.items():
            lines = [f"[{name}]"] + [f"{k}={v}" for k, v in entries.items()]
            blocks.append("\n".join(lines) + "\n")
        return "\n".join(blocks)

    def save(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        atomic_write(Path(path), self.serialize().encode(), fsync=fsync)

    def get(self, group: str, key: str, default: str | None = None) -> str | None:
        return self.groups.get(group, {}).get(key, default)

    def get_bool(self, group: str, key: str, default: bool) -> bool:
        value = self.get(group, key)
        if value is None:
            return default
        return value.lower() in ("true", "1", "yes")

    def get_number(self, group: str, key: str, default: float, *, low: float, high: float) -> float:
        """A number between low and high; any other text is refused naming the key."""
        value = self.get(group, key)
        if value is None or value == "":
            return default
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not low <= number <= high:
            raise CorruptionError(f"invalid value for {key} in [{group}]: {value[:40]!r} (a number from {low:g} "
                                  f"to {high:g} is expected)")
        return number

    def get_list(self, group: str, key: str) -> list[str]:
        value = self.get(group, key)
        if not value:
            return []
        return [item for item in value.split(";") if item]

    def set(self, group: str, key: str, value: str | bool | int | list[str]) -> None:
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list):
            text = "".join(f"{item};" for item in value)
        else:
            text = str(value)
        self.groups.setdefault(group, {})[key] = text

    def remove(self, group: str, key: str | None = None) -> None:
        if key is None:
            self.groups.pop(group, None)
        elif group in self.groups:
            self.groups[group].pop(key, None)
            if not self.groups[group]:
                del self.groups[group]

    def has_group(self, group: str) -> bool:
        return group in self.groups
