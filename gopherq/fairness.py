"""Fair-sharing keys: what a task's ``fair_key`` option and the ``fair_key`` send
option accept, and how a task derives its key from its arguments.

The broker does the sharing (see ``gopherq.brokers.base``): within a queue and
priority, ready messages of different keys take turns. This module only checks
and computes keys at send time; a task without the option costs nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gopherq.errors import ConfigurationError
from gopherq.message import MAX_FAIR_KEY

KeyOf = Callable[[Sequence[Any], Mapping[str, Any]], str | None]
"""A task's key from the arguments of one call (None: this call has none)."""

_EXPECTED = f"a string of 1-{MAX_FAIR_KEY} characters"


def checked(value: Any, what: str = "send option fair_key", expected: str = _EXPECTED) -> str:
    """``value`` as a fair key; otherwise ``ValueError``: one line naming ``what``, what
    is expected and the value."""
    if isinstance(value, str) and 1 <= len(value) <= MAX_FAIR_KEY:
        return value
    raise ValueError(f"{what} must be {expected}, not {value!r:.80}")


def key_of(task: str, signature: inspect.Signature, option: Any) -> KeyOf | None:
    """How a task named ``task`` with call signature ``signature`` derives its fair key
    from the ``fair_key`` task option; None without the option.

    The option names a parameter (whose value, a string or an integer, is the key)
    or is a function taking the task's arguments and returning the key; None from
    either means no key for that call. Raises
    ``ConfigurationError`` for anything else, or a name that is not a parameter of
    the task (``*args`` and ``**kwargs`` do not count).
    """
    if option is None:
        return None
    if isinstance(option, str):
        return _parameter(task, signature, option)
    if callable(option):
        return _computed(task, option)
    raise ConfigurationError(
        f"task {task}: fair_key takes the name of a parameter or a function of the "
        f"task's arguments, not {option!r:.80}"
    )


def _parameter(task: str, signature: inspect.Signature, name: str) -> KeyOf:
    parameter = signature.parameters.get(name)
    if parameter is None or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
        names = [
            p.name
            for p in signature.parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        raise ConfigurationError(
            f"task {task}: fair_key names {name!r}, which is not one of its parameters "
            f"({', '.join(names) or 'it has none'})"
        )
    positional = list(signature.parameters).index(name)
    if parameter.kind is parameter.KEYWORD_ONLY:
        positional = -1
    default = None if parameter.default is parameter.empty else parameter.default
    what = f"task {task}: fair_key argument {name!r}"

    def key(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
        value = args[positional] if 0 <= positional < len(args) else kwargs.get(name, default)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # tenant ids are often numbers
        return checked(value, what, f"{_EXPECTED} or an integer")

    return key


def _computed(task: str, function: Callable[..., Any]) -> KeyOf:
    name = getattr(function, "__qualname__", repr(function))
    what = f"task {task}: what its fair_key function {name} returns"

    def key(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
        value = function(*args, **kwargs)
        return None if value is None else checked(value, what)

    return key
