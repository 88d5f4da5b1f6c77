"""Typed configs as data: dataclasses read from / written to JSON; unknown keys are an error."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def _convert(tp: Any, value: Any) -> Any:
    """Convert a JSON value to the annotated type (nested dataclasses and tuples; a type with a
    ``from_json`` classmethod reads its own JSON layout)."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and hasattr(tp, "from_json") and not isinstance(value, tp):
        return tp.from_json(value)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return from_dict(arg, value)
        return value
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in value)
        return tuple(_convert(a, v) for a, v in zip(args, value))
    return value


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass ``cls`` from a dict; raises ``ValueError`` on unknown keys."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _convert(hints[k], v) for k, v in data.items()})


def _plain(obj: Any) -> Any:
    if hasattr(obj, "to_json") and dataclasses.is_dataclass(obj):
        return obj.to_json()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """JSON-friendly dict of a dataclass (tuples become lists; a field type with ``to_json``
    writes its own layout, which its ``from_json`` reads back)."""
    return json.loads(json.dumps(_plain(obj)))


def load_json(cls: type[T], path: str | Path) -> T:
    return from_dict(cls, json.loads(Path(path).read_text()))


def save_json(obj: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(obj), indent=2) + "\n")


def variants(prefix: str) -> list[str]:
    """The named variants ``crrg/configs/<prefix>_<variant>.json``."""
    return sorted(p.stem.removeprefix(f"{prefix}_") for p in CONFIG_DIR.glob(f"{prefix}_*.json"))


def load_variant(cls: type[T], prefix: str, variant: str, kind: str) -> T:
    """A named variant from ``crrg/configs/<prefix>_<variant>.json``; an unknown name lists the
    valid ones (``kind`` names what it is in the message, e.g. "model")."""
    path = CONFIG_DIR / f"{prefix}_{variant}.json"
    if not path.is_file():
        raise ValueError(f"unknown {kind} variant {variant!r}; valid variants: {variants(prefix)}")
    return load_json(cls, path)
