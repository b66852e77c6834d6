"""Run-time checks of a dataclass's values against its type hints (the configs' checks)."""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import re
import types
import typing
from typing import Any, Literal

from napari_medml.errors import ConfigError

__all__ = ["check_fields", "check_stop_metric", "is_int"]


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (NumPy's too), and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_stop_metric(task: str, metric: str) -> None:
    """Refuse a best-epoch metric (``optim.early_stopping_metric``) that ``task`` does not compute.

    Parameters
    ----------
    task : str
        The training task (``TrainConfig.task``).
    metric : str
        The metric that picks the best epoch and stops early.

    Raises
    ------
    ConfigError
        ``val_loss`` for instances: their validation scores the objects found and has no
        loss, so the training loss would pick the best epoch without a word.
    """
    if task == "instances" and metric == "val_loss":
        raise ConfigError("early_stopping_metric val_loss is not computed for instances (their validation scores "
                          "the objects found): choose val_dice (the Train widget's 'best epoch by'), which picks "
                          "the best epoch by the held-out AP at IoU 0.5")


_KINDS = {int: (is_int, "an integer", "integers"),  # what int, float, bool fields hold (a bool is no number)
          float: (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool), "a number", "numbers"),
          bool: (lambda v: isinstance(v, bool) or type(v).__name__ in ("bool_", "bool"), "True or False",
                 "True or False")}


def check_fields(config: Any) -> None:
    """Check a dataclass's values against its type hints (first in each config's ``__post_init__``).

    ``Literal`` fields take one of their choices (a choice list with ``"cuda"`` also takes
    ``"cuda:N"``), ``int``/``float``/``bool`` fields and ``tuple[int, ...]`` items their kind (a
    bool is no number), dataclass fields an instance of their class; ``X | None`` fields also
    take None. Written here because no library checks ``Literal`` values at run time with a
    close-match hint.

    Parameters
    ----------
    config : dataclass instance

    Raises
    ------
    ConfigError
        One line naming the field, its value and what it takes ("did you mean ...?" for a
        close choice).
    """
    hints = typing.get_type_hints(type(config))  # evaluates the string annotations (``from __future__``)
    for f in dataclasses.fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        if value is None and union and type(None) in typing.get_args(hint):
            continue
        options = tuple(o for o in (typing.get_args(hint) if union else (hint,)) if o is not type(None))
        if all(typing.get_origin(o) is Literal for o in options):
            choices = tuple(c for o in options for c in typing.get_args(o))  # str or int (Literal[2, 3])
            device = "cuda" in choices
            if any(value == c and (isinstance(value, str) if isinstance(c, str) else is_int(value)) for c in choices
                   ) or (device and isinstance(value, str) and re.fullmatch(r"cuda:\d+", value)):
                continue
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.75)
            extra = (" or 'cuda:N' (GPU number N)" if device else "") + (
                f"; did you mean {close[0]!r}?" if close else "")
            raise ConfigError(f"{f.name} {value!r} is not one of {', '.join(repr(c) for c in choices)}{extra}")
        kind = options[0] if len(options) == 1 else None
        if dataclasses.is_dataclass(kind) and not isinstance(value, kind):
            raise ConfigError(f"{f.name} must be {kind.__name__}(...), got {type(value).__name__} {value!r}")
        items = typing.get_args(kind) if typing.get_origin(kind) is tuple and isinstance(value, (tuple, list)) else ()
        each = items[0] if items[1:] == (Ellipsis,) else None  # tuple[int, ...]: every item an int
        if each in _KINDS and not all(_KINDS[each][0](v) for v in value):
            raise ConfigError(f"{f.name} {tuple(value)!r} must hold {_KINDS[each][2]} only")
        if kind in _KINDS and not _KINDS[kind][0](value):
            raise ConfigError(f"{f.name} {value!r} must be {_KINDS[kind][1]}")
