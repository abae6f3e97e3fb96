"""A task call as a job carries it: the job's data and the metadata that names it.

The data is the call, ``{"args": [...], "kwargs": {...}}`` in JSON, so that any tool
(the Perl module's ``dq-list``, ``dq show``, a Perl worker) can read it. JSON carries
only what it can give back unchanged: an argument that would arrive as something else
(a tuple as a list, a set not at all) is refused when the task is submitted, naming the
argument, rather than failing in a worker later. Pickle carries any Python object, and
runs code of the producer's choosing in the worker that loads it: only a queue whose
owner opted in (``TaskQueue(pickle=True)``, whose producers are all trusted) uses it.
"""

from __future__ import annotations

import inspect
import json
import math
import pickle
from dataclasses import dataclass
from typing import Any, Final

from .._handler import FailJob
from ..errors import DirQueueError

__all__ = [
    "ENCODING_KEY",
    "TASK_KEY",
    "BadCallError",
    "TaskArgumentError",
    "decode_call",
    "encode_call",
]

#: The metadata naming a job's task (``module.function``, or the name it was given).
TASK_KEY: Final = "task"
#: How the call is encoded: ``json`` (the default) or ``pickle``.
ENCODING_KEY: Final = "task_encoding"
#: The task's time limit in seconds, which the task handler keeps.
JSON: Final = "json"
PICKLE: Final = "pickle"


class TaskArgumentError(DirQueueError, TypeError):
    """An argument a task cannot be submitted with: JSON cannot carry it (``argument``
    names it), or the arguments do not fit the function's signature."""

    def __init__(self, message: str, argument: str | None = None) -> None:
        super().__init__(message)
        self.argument = argument


class BadCallError(FailJob, ValueError):
    """A task job whose call cannot be read (not the JSON of a call, pickle where the
    worker does not accept it, arguments that do not fit the function). Never retried
    (a :class:`~dirqueue.FailJob`): every attempt would read it the same."""


def _json_faithful(value: object) -> str | None:
    """Why JSON cannot carry ``value`` unchanged, or None if it can."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        return str(err)
    back = json.loads(text)
    if back != value or not _same_shape(back, value):
        return "it would arrive as " + type(back).__name__ + " " + text[:60]
    return None


def _same_shape(back: object, value: object) -> bool:
    """True if ``back`` (read from JSON) has ``value``'s types all the way down:
    ``1 == 1.0 == True`` in Python, but a task given ``True`` must not receive ``1``."""
    if type(back) is not type(value):
        # JSON gives int for a whole float only if written so; an int subclass (an
        # IntEnum) arrives as a plain int.
        return isinstance(value, float) and isinstance(back, float)
    if isinstance(value, list):
        return all(_same_shape(b, v) for b, v in zip(back, value, strict=True))  # type: ignore[call-overload]
    if isinstance(value, dict):
        return all(_same_shape(back[k], v) for k, v in value.items())  # type: ignore[index]
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def encode_call(
    signature: inspect.Signature | None, name: str, args: tuple[Any, ...],
    kwargs: dict[str, Any], *, use_pickle: bool,
) -> bytes:
    """The job data for a call of task ``name``, after checking the arguments fit its
    ``signature`` (None: a builtin without one, whose call will tell) and (JSON) that
    each one arrives as it left."""
    bound = None
    if signature is not None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as err:
            raise TaskArgumentError(f"task {name}: {err}") from None
    if use_pickle:
        return pickle.dumps({"args": list(args), "kwargs": kwargs}, protocol=4)
    named: list[tuple[str, Any]]
    if bound is not None:
        named = list(bound.arguments.items())
    else:
        named = [(f"#{i + 1}", a) for i, a in enumerate(args)] + list(kwargs.items())
    for argument, value in named:
        why = _json_faithful(value)
        if why is not None:
            raise TaskArgumentError(
                f"task {name}: argument {argument!r} ({type(value).__name__}) cannot be"
                f" sent as JSON: {why}. Pass str, int, float, bool, None, and lists or"
                " dicts (str keys) of them; or convert it (a list for a tuple, str for a"
                " path); or, with trusted producers only, TaskQueue(..., pickle=True)",
                argument,
            )
    return json.dumps({"args": list(args), "kwargs": kwargs}, allow_nan=False).encode()


@dataclass(frozen=True)
class Call:
    """A decoded call: positional and keyword arguments."""

    args: list[Any]
    kwargs: dict[str, Any]


def decode_call(data: bytes, encoding: str, *, allow_pickle: bool) -> Call:
    """The call a task job's data holds; :class:`BadCallError` if it holds none."""
    if encoding == PICKLE:
        if not allow_pickle:
            raise BadCallError(
                "the call is pickled and this worker does not load pickle (it runs any"
                " code its producer chose): start it with pickle allowed (TaskQueue(...,"
                " pickle=True), dq server --tasks-pickle) if every producer is trusted"
            )
        try:
            fields = pickle.loads(data)  # noqa: S301 - opted in: trusted producers only
        except Exception as err:
            raise BadCallError(f"the pickled call cannot be loaded: {err}") from None
    elif encoding == JSON:
        try:
            fields = json.loads(data)
        except ValueError as err:
            raise BadCallError(f"the call is not valid JSON: {err}") from None
        if type(fields) is dict and len(fields) == 2:
            # The call as encode_call writes it: fresh lists and dicts (whose keys JSON
            # makes str), used as they are, uncopied and unchecked again.
            args, kwargs = fields.get("args"), fields.get("kwargs")
            if type(args) is list and type(kwargs) is dict:
                return Call(args, kwargs)
    else:
        raise BadCallError(
            f"unknown call encoding {encoding!r} (metadata {ENCODING_KEY}): json or pickle"
        )
    if (
        not isinstance(fields, dict)
        or not isinstance(fields.get("args", []), list)
        or not isinstance(fields.get("kwargs", {}), dict)
        or not all(isinstance(k, str) for k in fields.get("kwargs", {}))
    ):
        raise BadCallError(
            'the call must be an object {"args": [...], "kwargs": {...}}, not '
            + repr(data[:80])
        )
    return Call(list(fields.get("args", [])), dict(fields.get("kwargs", {})))
