"""The tasks module of the README's "Tasks and results" section: a worker imports it
(``dq server --tasks wordcount_tasks``), and so does the code that submits."""

from __future__ import annotations

import os
from collections import Counter

from dirqueue.tasks import TaskQueue

q = TaskQueue(os.environ.get("WORDCOUNT_QUEUE", "spool/words"))


@q.task(retries=2, retry_delay=5, timeout=60)
def word_count(text: str, top: int = 3) -> dict[str, object]:
    """How many words ``text`` has, and its ``top`` commonest."""
    words = text.lower().split()
    return {"words": len(words), "top": Counter(words).most_common(top)}


@q.task(retries=0)
def divide(a: float, b: float) -> float:
    return a / b
