"""The project's one JSON converter: plain structures from configs, bundle descriptions,
checkpoint states and metadata (:func:`to_dict`), and config dataclasses back from them,
guided by their type hints (:func:`from_dict`). ``napari_medml.config`` re-exports both.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from napari_medml.errors import ConfigError

__all__ = ["from_dict", "to_dict"]

# --- JSON round trip ---------------------------------------------------------------
# dataclasses.asdict goes one way only; this small converter goes back, guided by the
# type hints, so that tuples stay tuples and nested configs are rebuilt.


def to_dict(obj: Any, default: Any = None) -> Any:
    """Plain JSON-able structure of a config (dataclasses, tuples, mappings) or of any nested value.

    The one JSON converter of the project (configs, bundle descriptions, checkpoint
    states, OME-Zarr metadata): mapping keys become strings, tuples lists, numpy
    scalars and 0-d tensors Python numbers, arrays and tensors nested lists.
    ``default``, if given, maps any other value (e.g. ``lambda v: None`` for the
    callables in a scheduler's state); otherwise it is kept as it is.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name), default) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v, default) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return [to_dict(v, default) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if hasattr(obj, "ndim") and hasattr(obj, "tolist"):  # numpy scalars and arrays, torch tensors
        return obj.tolist() if obj.ndim else obj.item()
    return obj if default is None else default(obj)


# Fields renamed since schema 1: (class, old name) -> new name, so older bundles still load.
_RENAMED = {("ModelConfig", "features"): "channels"}


def from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a config dataclass from ``to_dict`` output; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    data = {_RENAMED.get((cls.__name__, k), k): v for k, v in data.items()}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{cls.__name__} has no option(s) {sorted(unknown)}")
    return cls(**{k: _coerce(hints[k], v) for k, v in data.items()})


def _coerce(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value) if len(non_none) == 1 else value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        return tuple(value)
    if origin in (Mapping, dict) or hint is Mapping:
        key_type = args[0] if args else str
        return {key_type(k) if key_type is int else k: v for k, v in value.items()}
    return value
