"""The recorder: the file-system calls a queue operation makes, as a trace of events.

The engine calls ``os`` functions by attribute (``os.open``, ``os.link``...), also
through ``shutil.rmtree``, and three primitives of :mod:`dirqueue._fs` go through
ctypes (``syncfs``, and ``exchange`` and ``rename_noreplace``, each a ``renameat2``).
Patching those names while one operation runs, in its own thread only, sees every
call that changes the queue; the directory walks made by ``openat2`` (ctypes too) only
open directories, which changes nothing.
``strace -f -e trace=file,desc`` of the same operations agreed
(``python -m crashcheck --strace``, see docs/durability.md).

Each event names paths relative to the queue and inodes by a number of the recorder's
own (a fresh one for each file created: the kernel reuses inode numbers):

- ``("mkdir", path)``, ``("rmdir", path)``
- ``("create", path, ino)``: a new empty file
- ``("write", ino, offset, data)``, ``("trunc", ino, size)``
- ``("link", ino, path)``, ``("unlink", path, ino)``
- ``("rename", ino, src, dst)``, ``("renamedir", src, dst)``
- ``("exchange", ino_a, a, ino_b, b)``
- ``("utime", ino, mtime_ns)``
- barriers: ``("fsync", ino)``, ``("fsyncdir", path)``, ``("syncfs",)``
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dirqueue import _fs

Event = tuple[Any, ...]

#: Events that change nothing, only make earlier ones durable.
BARRIERS = frozenset({"fsync", "fsyncdir", "syncfs"})


@dataclass
class Snapshot:
    """A queue directory as it stands (taken after a ``sync()``, so all of it durable)."""

    dirs: set[str] = field(default_factory=set)
    names: dict[str, int] = field(default_factory=dict)
    data: dict[int, bytes] = field(default_factory=dict)
    mtime: dict[int, int] = field(default_factory=dict)
    mode: dict[int, int] = field(default_factory=dict)


class Recorder:
    """Records, while :meth:`recording`, the calls of the thread that entered it."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self.events: list[Event] = []
        #: Every call seen, as ``(call, description)``: for the comparison with strace.
        self.calls: list[tuple[str, str]] = []
        self._ino: dict[tuple[int, int], int] = {}
        self._next = 0
        self._fds: dict[int, int] = {}  # open file -> our inode number
        self._thread = 0
        self.modes: dict[int, int] = {}

    # -- naming --------------------------------------------------------------------

    def inode(self, st: os.stat_result, *, fresh: bool = False) -> int:
        key = (st.st_dev, st.st_ino)
        if fresh or key not in self._ino:
            self._next += 1
            self._ino[key] = self._next
        return self._ino[key]

    def snapshot(self) -> Snapshot:
        """The queue as it is now; its inodes numbered for the events that follow."""
        snap = Snapshot()
        for top, dirs, files in os.walk(self.root):
            rel_top = os.path.relpath(top, self.root)
            for d in dirs:
                snap.dirs.add(os.path.normpath(os.path.join(rel_top, d)))
            for f in files:
                path = os.path.join(top, f)
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    continue
                ino = self.inode(st)
                snap.names[os.path.normpath(os.path.join(rel_top, f))] = ino
                if ino not in snap.data:
                    with open(path, "rb") as fh:
                        snap.data[ino] = fh.read()
                    snap.mtime[ino] = st.st_mtime_ns
                    snap.mode[ino] = stat.S_IMODE(st.st_mode)
        return snap

    def _fd_path(self, fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

    def rel(self, path: Any, dir_fd: int | None = None) -> str | None:
        """``path`` (relative to ``dir_fd``) relative to the queue; None outside it."""
        if isinstance(path, int):
            full = self._fd_path(path)
        else:
            name = os.fsdecode(path)
            if dir_fd is not None and not os.path.isabs(name):
                name = os.path.join(self._fd_path(dir_fd), name)
            name = os.path.abspath(name)
            head, tail = os.path.split(name)
            full = os.path.join(os.path.realpath(head), tail) if tail else os.path.realpath(head)
        if full == self.root:
            return "."
        if not full.startswith(self.root + os.sep):
            return None
        return os.path.relpath(full, self.root)

    def _lstat(self, path: Any, dir_fd: int | None = None, *, follow: bool = False) -> (
            os.stat_result | None):
        try:
            if isinstance(path, int):
                return os.fstat(path)
            return os.stat(path, dir_fd=dir_fd, follow_symlinks=follow)
        except OSError:
            return None

    # -- the patched calls ---------------------------------------------------------

    def _mine(self) -> bool:
        return threading.get_ident() == self._thread

    def _open(self, real: Callable[..., int]) -> Callable[..., int]:
        def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
            if not self._mine():
                return real(path, flags, mode, dir_fd=dir_fd)
            rel = self.rel(path, dir_fd)
            existed = rel is not None and flags & os.O_CREAT and self._lstat(path, dir_fd)
            fd = real(path, flags, mode, dir_fd=dir_fd)
            if rel is None:
                return fd
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                return fd
            self.calls.append(("open", rel))
            if flags & os.O_CREAT and not existed:
                ino = self.inode(st, fresh=True)
                self.modes[ino] = stat.S_IMODE(st.st_mode)
                self.events.append(("create", rel, ino))
            else:
                ino = self.inode(st)
                if flags & os.O_TRUNC:
                    self.events.append(("trunc", ino, 0))
            self._fds[fd] = ino
            return fd
        return open_

    def _write(self, real: Callable[..., int]) -> Callable[..., int]:
        def write(fd: int, data: Any) -> int:
            ino = self._fds.get(fd) if self._mine() else None
            if ino is None:
                return real(fd, data)
            offset = os.lseek(fd, 0, os.SEEK_CUR)
            n = real(fd, data)
            self.calls.append(("write", str(ino)))
            self.events.append(("write", ino, offset, bytes(memoryview(data)[:n])))
            return n
        return write

    def _ftruncate(self, real: Callable[..., None]) -> Callable[..., None]:
        def ftruncate(fd: int, size: int) -> None:
            real(fd, size)
            ino = self._fds.get(fd) if self._mine() else None
            if ino is not None:
                self.calls.append(("ftruncate", str(ino)))
                self.events.append(("trunc", ino, size))
        return ftruncate

    def _close(self, real: Callable[..., None]) -> Callable[..., None]:
        def close(fd: int) -> None:
            if self._mine():
                self._fds.pop(fd, None)
            real(fd)
        return close

    def _fsync(self, real: Callable[..., None], name: str) -> Callable[..., None]:
        def fsync(fd: Any) -> None:
            real(fd)
            if not self._mine():
                return
            if not isinstance(fd, int):
                fd = fd.fileno()
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                rel = self.rel(fd)
                if rel is not None:
                    self.calls.append((name, rel))
                    self.events.append(("fsyncdir", rel))
            elif fd in self._fds or (st.st_dev, st.st_ino) in self._ino:
                self.calls.append((name, str(self.inode(st))))
                self.events.append(("fsync", self.inode(st)))
        return fsync

    def _link(self, real: Callable[..., None]) -> Callable[..., None]:
        def link(src: Any, dst: Any, *, src_dir_fd: int | None = None,
                 dst_dir_fd: int | None = None, follow_symlinks: bool = True) -> None:
            if not self._mine():
                return real(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd,
                            follow_symlinks=follow_symlinks)
            st = self._lstat(src, src_dir_fd, follow=follow_symlinks)
            rel = self.rel(dst, dst_dir_fd)
            real(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd,
                 follow_symlinks=follow_symlinks)
            if rel is not None and st is not None:
                self.calls.append(("link", rel))
                self.events.append(("link", self.inode(st), rel))
            return None
        return link

    def _rename(self, real: Callable[..., None], name: str) -> Callable[..., None]:
        def rename(src: Any, dst: Any, *, src_dir_fd: int | None = None,
                   dst_dir_fd: int | None = None) -> None:
            if not self._mine():
                return real(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
            st = self._lstat(src, src_dir_fd)
            a, b = self.rel(src, src_dir_fd), self.rel(dst, dst_dir_fd)
            real(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
            if a is None or b is None or st is None:
                return None
            self.calls.append((name, f"{a} -> {b}"))
            if stat.S_ISDIR(st.st_mode):
                self.events.append(("renamedir", a, b))
            else:
                self.events.append(("rename", self.inode(st), a, b))
            return None
        return rename

    def _unlink(self, real: Callable[..., None], name: str) -> Callable[..., None]:
        def unlink(path: Any, *, dir_fd: int | None = None) -> None:
            if not self._mine():
                return real(path, dir_fd=dir_fd)
            st = self._lstat(path, dir_fd)
            rel = self.rel(path, dir_fd)
            real(path, dir_fd=dir_fd)
            if rel is not None and st is not None:
                self.calls.append((name, rel))
                self.events.append(("unlink", rel, self.inode(st)))
            return None
        return unlink

    def _mkdir(self, real: Callable[..., None]) -> Callable[..., None]:
        def mkdir(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
            real(path, mode, dir_fd=dir_fd)
            rel = self.rel(path, dir_fd) if self._mine() else None
            if rel is not None:
                self.calls.append(("mkdir", rel))
                self.events.append(("mkdir", rel))
        return mkdir

    def _rmdir(self, real: Callable[..., None]) -> Callable[..., None]:
        def rmdir(path: Any, *, dir_fd: int | None = None) -> None:
            rel = self.rel(path, dir_fd) if self._mine() else None
            real(path, dir_fd=dir_fd)
            if rel is not None:
                self.calls.append(("rmdir", rel))
                self.events.append(("rmdir", rel))
        return rmdir

    def _utime(self, real: Callable[..., None]) -> Callable[..., None]:
        def utime(path: Any, *args: Any, **kwargs: Any) -> None:
            real(path, *args, **kwargs)
            if not self._mine():
                return
            dir_fd = kwargs.get("dir_fd")
            follow = kwargs.get("follow_symlinks", True)
            st = self._lstat(path, dir_fd, follow=follow)
            rel = self.rel(path, dir_fd)
            if rel is None or st is None or stat.S_ISDIR(st.st_mode):
                return  # A directory's mtime only wakes waiting workers.
            self.calls.append(("utime", rel))
            self.events.append(("utime", self.inode(st), st.st_mtime_ns))
        return utime

    def _syncfs(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def syncfs(fd: int) -> None:
            real(fd)
            if self._mine():
                self.calls.append(("syncfs", ""))
                self.events.append(("syncfs",))
        return syncfs

    def _exchange(self, real: Callable[..., bool]) -> Callable[..., bool]:
        def exchange(a: str, b: str, *, a_dir_fd: int | None = None,
                     b_dir_fd: int | None = None) -> bool:
            if not self._mine():
                return real(a, b, a_dir_fd=a_dir_fd, b_dir_fd=b_dir_fd)
            sa, sb = self._lstat(a, a_dir_fd), self._lstat(b, b_dir_fd)
            ra, rb = self.rel(a, a_dir_fd), self.rel(b, b_dir_fd)
            done = real(a, b, a_dir_fd=a_dir_fd, b_dir_fd=b_dir_fd)
            if done and sa and sb and ra is not None and rb is not None:
                self.calls.append(("exchange", f"{ra} <-> {rb}"))
                self.events.append(("exchange", self.inode(sa), ra, self.inode(sb), rb))
            return done
        return exchange

    def _rename_noreplace(self, real: Callable[..., bool | None]) -> Callable[..., bool | None]:
        def rename_noreplace(src: str, dst: str, *, src_dir_fd: int | None = None,
                             dst_dir_fd: int | None = None) -> bool | None:
            if not self._mine():
                return real(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
            st = self._lstat(src, src_dir_fd)
            a, b = self.rel(src, src_dir_fd), self.rel(dst, dst_dir_fd)
            done = real(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)
            if done and st and a is not None and b is not None:
                self.calls.append(("rename_noreplace", f"{a} -> {b}"))
                self.events.append(("rename", self.inode(st), a, b))
            return done
        return rename_noreplace

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Patch the calls for the current thread while the block runs."""
        self._thread = threading.get_ident()
        patches: list[tuple[Any, str, Any]] = []

        def patch(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
            real = getattr(owner, name)
            patches.append((owner, name, real))
            setattr(owner, name, make(real))

        patch(os, "open", self._open)
        patch(os, "write", self._write)
        patch(os, "ftruncate", self._ftruncate)
        patch(os, "close", self._close)
        patch(os, "fsync", lambda r: self._fsync(r, "fsync"))
        patch(os, "fdatasync", lambda r: self._fsync(r, "fdatasync"))
        patch(os, "link", self._link)
        patch(os, "rename", lambda r: self._rename(r, "rename"))
        patch(os, "replace", lambda r: self._rename(r, "replace"))
        patch(os, "unlink", lambda r: self._unlink(r, "unlink"))
        patch(os, "remove", lambda r: self._unlink(r, "remove"))
        patch(os, "mkdir", self._mkdir)
        patch(os, "rmdir", self._rmdir)
        patch(os, "utime", self._utime)
        patch(_fs, "syncfs", self._syncfs)
        patch(_fs, "exchange", self._exchange)
        patch(_fs, "rename_noreplace", self._rename_noreplace)
        try:
            yield
        finally:
            for owner, name, real in reversed(patches):
                setattr(owner, name, real)
