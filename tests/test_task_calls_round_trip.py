"""Property tests: a task call and an answer come back as they left, or are refused
at once; nothing JSON would change is ever sent."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dirqueue._results import ResultRecord, UnstorableResultError, encode_value
from dirqueue.tasks import TaskArgumentError
from dirqueue.tasks._call import decode_call, encode_call

pytestmark = pytest.mark.timeout(120)

#: Any Python value made of what JSON has, and of what it would change or refuse.
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text()
    | st.tuples(st.integers()) | st.sets(st.integers(), max_size=2) | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3),
    max_leaves=8,
)


def _signature(x: Any, y: Any = None) -> None: ...


SIGNATURE = inspect.signature(_signature)


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_a_call_arrives_as_it_left_or_is_refused_naming_its_argument(x: Any, y: Any) -> None:
    refused: TaskArgumentError | None = None
    try:
        data = encode_call(SIGNATURE, "t", (x,), {"y": y}, use_pickle=False)
    except TaskArgumentError as err:
        refused = err
    if refused is not None:
        assert refused.argument in ("x", "y")
        return
    call = decode_call(data, "json", allow_pickle=False)
    assert call.args == [x]
    assert call.kwargs == {"y": y}
    assert repr(call.args) == repr([x])  # Types too: True stays True, 1.0 stays 1.0.
    assert repr(call.kwargs["y"]) == repr(y)


@settings(max_examples=300, deadline=None)
@given(values)
def test_an_answer_reads_back_as_it_was_or_is_refused(value: Any) -> None:
    try:
        encoded = encode_value(value)
    except UnstorableResultError:
        return
    text = json.dumps({"jobid": "j", "status": "done", "kind": encoded.kind,
                       "value": encoded.value}, allow_nan=False)
    fields = json.loads(text)
    record = ResultRecord(**fields)
    if encoded.kind in ("bytes", "str"):
        assert record.decoded() == value
    else:
        assert record.decoded() == json.loads(json.dumps(value))
