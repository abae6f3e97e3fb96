"""``dq show --data``: a job's data, from wherever the job is, printed raw or escaped.

Piped, the data is the job's own bytes, for a program; on a terminal it is whoever
submitted it speaking to the operator's screen, and is shown escaped like every other
line ``dq`` prints (:func:`dirqueue.cli._output.escape_controls`).
"""

from __future__ import annotations

import codecs
import os
from typing import IO, TYPE_CHECKING, BinaryIO, Final

from .. import _fs
from .._format import is_job_name
from ..errors import NoSuchJobError
from ..failed import FailedStore, NoSuchFailedJobError
from ._output import escape_controls, isatty

if TYPE_CHECKING:
    from ..queue import DirQueue

__all__ = ["open_job_data", "print_data"]


def open_job_data(queue: DirQueue, jobid: str) -> BinaryIO:
    """Job ``jobid``'s data, wherever the job is (queued, active, deferred or failed),
    opened without following a symlink; :class:`NoSuchJobError` if it is nowhere."""
    if not is_job_name(jobid):
        raise NoSuchJobError(f"{jobid!r} is not a job id: copy one from 'dq list'", jobid)
    for job in queue.jobs():
        if job.jobid == jobid:
            return job.open_data()
    try:
        failed = FailedStore(queue).get(jobid)
    except NoSuchFailedJobError:
        raise NoSuchJobError(
            f"no job {jobid} in {queue.dir}: it is not queued, active or failed", jobid
        ) from None
    return os.fdopen(_fs.open_regular(failed.data_path), "rb")


#: How much of the data is read at a time: any size of data is printed in flat memory.
_CHUNK: Final = 65536


def print_data(source: BinaryIO, out: IO[str]) -> None:
    """Copy ``source`` to ``out``: raw bytes unless ``out`` is a terminal.

    Piped or redirected (``dq show --data ID > file``, ``| jq``), the data is copied
    byte for byte: it is the job's own, and a program reading it wants it exact. On a
    terminal it is whoever submitted it speaking to the operator's screen, so it is
    shown as text (UTF-8, undecodable bytes as U+FFFD) with control characters as
    visible escapes, as every other line ``dq`` prints, newlines kept; a last newline
    is added if the data lacks one, so the prompt starts on a line of its own. A text
    stream with no bytes underneath (``main(stdout=io.StringIO())``) gets the text form.
    """
    with source:
        raw = getattr(out, "buffer", None)
        if not isatty(out) and raw is not None:
            out.flush()
            while chunk := source.read(_CHUNK):
                raw.write(chunk)
            raw.flush()
            return
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        last = "\n"
        while True:
            chunk = source.read(_CHUNK)
            text = decoder.decode(chunk, final=not chunk)
            if text:
                out.write("\n".join(escape_controls(part) for part in text.split("\n")))
                last = text[-1]
            if not chunk:
                break
        if last != "\n":
            out.write("\n")
        out.flush()
