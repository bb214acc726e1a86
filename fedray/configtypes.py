"""Turn plain YAML data into typed frozen dataclasses, with errors that name the key and suggest fixes."""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from fedray.errors import ConfigError, did_you_mean


def build(cls: type, data: Any, path: str = "") -> Any:
    """Validate `data` (from YAML) against dataclass `cls` and return a frozen instance.

    Unknown keys, wrong types and missing required fields raise ConfigError naming the dotted key.

    Args:
        cls: a dataclass type whose field annotations describe the expected data.
        data: a mapping (or None for "all defaults").
        path: dotted prefix of this section, for error messages.

    Raises:
        ConfigError: on any mismatch.
    """
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    where = path or "the config"
    if not isinstance(data, dict):
        raise ConfigError(f"'{where}' must be a mapping of keys to values, got {_show(data)}.")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = get_type_hints(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(
                f"Unknown key '{_join(path, str(key))}'.{did_you_mean(str(key), fields)} "
                f"Valid keys here: {', '.join(sorted(fields))}."
            )
    values = {}
    for name, field in fields.items():
        key = _join(path, name)
        if name in data:
            values[name] = convert(hints[name], data[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"Missing required key '{key}'.")
    try:
        return cls(**values)
    except ConfigError as error:
        # __post_init__ checks name keys relative to their section: prefix the section's path.
        if path and not str(error).startswith(path):
            raise ConfigError(f"{path}: {error}") from None
        raise


def convert(annotation: Any, value: Any, key: str) -> Any:
    """Check `value` against a type annotation and convert it (lists become tuples, ints floats)."""
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return convert(option, value, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[-1])
    if origin is Literal:
        if value in args:
            return value
        choices = [str(a) for a in args]
        raise ConfigError(
            f"'{key}' must be one of {', '.join(choices)}; got {_show(value)}."
            f"{did_you_mean(str(value), choices)}"
        )
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}' must be a list, got {_show(value)}.")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"'{key}' must be a list of {len(args)} values, got {len(value)}.")
        return tuple(convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {_show(value)}.")
        if len(args) == 2:
            # Values are typed here; keys are left to the owner's checks (YAML may give 1 or "1").
            return {k: convert(args[1], v, f"{key}.{k}") for k, v in value.items()}
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}' must be true or false, got {_show(value)}.")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}' must be an integer, got {_show(value)}.")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"'{key}' must be a number, got {_show(value)}.")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"'{key}' must be a string, got {_show(value)}.")
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")  # a bug in fedray, not input


def to_data(obj: Any) -> Any:
    """Inverse of `build`: dataclasses to plain dicts, tuples to lists (for YAML and MLflow)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    return obj


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition` holds (for __post_init__ checks)."""
    if not condition:
        raise ConfigError(message)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


__all__ = ["build", "convert", "to_data", "require"]
