"""docs/lifecycle.md's state diagram names every state the code has."""

from __future__ import annotations

import re
from pathlib import Path

from dirqueue.stats import STATES

DOC = Path(__file__).resolve().parents[1] / "docs" / "lifecycle.md"


def test_the_state_diagram_has_every_state_and_every_api_that_moves_a_job() -> None:
    text = DOC.read_text(encoding="utf-8")
    diagram = text.split("```mermaid", 1)[1].split("```", 1)[0]
    states = set(re.findall(r"(\w+) -->", diagram)) | set(re.findall(r"--> (\w+)", diagram))
    # "stale" is an active job whose lock the next pickup breaks: a view, not a place.
    assert states - {"stale"} >= {s for s in STATES if s != "stale"} | {"failed", "corrupt"}
    for call in ("pickup_queued_job", "finish", "return_to_queue", "retry_later", "requeue"):
        assert call in diagram, call
