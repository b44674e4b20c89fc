"""Reading one TOML table with typed getters that name the key in every error, and the
``Secret`` type that never prints its value."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "Reader", "Secret", "array_of_tables", "table"]


class ConfigError(Exception):
    """A configuration problem; the message names the file and key, never a secret value."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}")


class Secret:
    """A string that never shows itself in repr/str, so it cannot leak through logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


class Reader:
    """Reads one TOML table, tracking which keys were consumed so leftovers are reported."""

    def __init__(
        self, source: str, prefix: str, table: Mapping[str, Any], env: Mapping[str, str]
    ) -> None:
        self.source = source
        self.prefix = prefix
        self.table = dict(table)
        self.env = env
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def err(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.key(name), problem)

    def _raw(self, name: str) -> Any:
        self.seen.add(name)
        return self.table.get(name)

    def strings(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        v = self._raw(name)
        if v is None:
            return default
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise self.err(name, "must be a list of non-empty strings")
        return tuple(v)

    def string(self, name: str, default: str | None = None) -> str:
        v = self._raw(name)
        if v is None:
            if default is None:
                raise self.err(name, "required key is missing")
            return default
        if not isinstance(v, str):
            raise self.err(name, f"must be a string, got {type(v).__name__}")
        return v

    def boolean(self, name: str, default: bool) -> bool:
        v = self._raw(name)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise self.err(name, f"must be true or false, got {type(v).__name__}")
        return v

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        v = self._raw(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.err(name, f"must be an integer, got {type(v).__name__}")
        if v < minimum:
            raise self.err(name, f"must be >= {minimum}, got {v}")
        return v

    def number(self, name: str, default: float, minimum: float = 0.0) -> float:
        v = self._raw(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.err(name, f"must be a number, got {type(v).__name__}")
        if v <= minimum:
            raise self.err(name, f"must be > {minimum}, got {v}")
        return float(v)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        v = self.string(name, default)
        for c in choices:
            if v.lower() == c.lower():
                return c
        raise self.err(name, f"must be one of {', '.join(choices)}, got {v!r}")

    def timestamp(self, name: str, default: datetime) -> datetime:
        v = self._raw(name)
        if v is None:
            return default
        if isinstance(v, datetime):
            dt = v
        elif isinstance(v, str):
            try:
                dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError:
                raise self.err(name, f"must be an ISO 8601 timestamp, got {v!r}") from None
        else:
            raise self.err(name, f"must be a timestamp string, got {type(v).__name__}")
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)

    def secret(self, name: str, required: bool) -> Secret:
        """A secret given as ``name``, ``name_env`` or ``name_file`` (exactly one)."""
        forms = [n for n in (name, f"{name}_env", f"{name}_file") if n in self.table]
        self.seen.update({name, f"{name}_env", f"{name}_file"})
        if len(forms) > 1:
            raise self.err(name, f"give only one of {', '.join(forms)}")
        if not forms:
            if required:
                raise self.err(
                    name, f"required secret is missing (set {name}, {name}_env or {name}_file)"
                )
            return Secret("")
        form = forms[0]
        raw = self.table[form]
        if not isinstance(raw, str):
            raise self.err(form, f"must be a string, got {type(raw).__name__}")
        if form == name:
            value = raw
        elif form.endswith("_env"):
            if raw not in self.env:
                raise self.err(form, f"environment variable {raw} is not set")
            value = self.env[raw]
        else:
            path = self.credential_path(raw)
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                hint = ""
                if not path.is_absolute():
                    hint = " (a relative path is read from $CREDENTIALS_DIRECTORY, not set here)"
                raise self.err(form, f"cannot read file {path}: {exc.strerror}{hint}") from None
        if required and not value:
            raise self.err(form, "secret is empty")
        return Secret(value)

    def credential_path(self, raw: str) -> Path:
        """A relative ``*_file`` path names a systemd credential (``LoadCredential=NAME:...``)
        when systemd set ``$CREDENTIALS_DIRECTORY`` (the service, or a ``systemd-run -p
        LoadCredential=`` one-off command), so one config serves both; otherwise it stays
        relative to the working directory."""
        path = Path(raw)
        creds = self.env.get("CREDENTIALS_DIRECTORY", "")
        if creds and not path.is_absolute():
            return Path(creds) / path
        return path

    def finish(self) -> None:
        extra = sorted(set(self.table) - self.seen)
        if extra:
            raise self.err(extra[0], "unknown key")


def table(source: str, doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    v = doc.get(name, {})
    if not isinstance(v, dict):
        raise ConfigError(source, name, "must be a table")
    return v


def array_of_tables(source: str, doc: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    v = doc.get(name, [])
    if not isinstance(v, list) or not all(isinstance(t, dict) for t in v):
        raise ConfigError(source, name, f"must be an array of tables ([[{name}]])")
    return v
