#!/usr/bin/env python3
"""Minimal userspace NFS client exposed through FUSE.

The NFS client of the multi-host test bed: setup-nfs-ganesha.sh starts one per
simulated host, inside that host's network namespace, under /usr/bin/python3.

NFS protocol work is done by libnfs (Debian package libnfs13, loaded with
ctypes); the FUSE side is fusepy (Debian python3-fusepy + libfuse2, or
PyPI fusepy).
No kernel NFS support is needed.

usage: nfsfuse.py SERVER EXPORT MOUNTPOINT [--nfs-version 3|4] [--attr-timeout S]
                  [--stats FILE] [--debug]

--stats FILE counts the requests the kernel hands this client, by kind (each is one
NFS call a kernel client would send: "getattr" stands for LOOKUP and GETATTR, which
FUSE's high-level API does not tell apart), and rewrites FILE as JSON whenever the
counts changed, at most every STATS_EVERY seconds, from a thread of its own: the
counting on the request path is one dict increment. bench/nfs.py reads it.

Use NFSv3 (the default).  With --nfs-version 4 libnfs never renews the
client's lease, so after Lease_Lifetime seconds of idleness every OPEN fails
(ERANGE, from NFS4ERR_EXPIRED).

Runs in the foreground (start it with '&' and wait for the mount).
Kernel-side caches are disabled (attr/entry/negative timeout 0, direct_io),
and libnfs's directory cache is off, so two mounts of the same export see
each other's changes immediately - as close to "two hosts on one NFS
export with actimeo=0" as we can get.
"""
import argparse
import ctypes
import ctypes.util
import errno
import json
import os
import sys
import threading
import time

try:  # Debian's python3-fusepy installs the module as 'fusepy'
    from fusepy import FUSE, FuseOSError, Operations
except ImportError:  # PyPI 'fusepy' installs it as 'fuse'
    from fuse import FUSE, FuseOSError, Operations

lib = ctypes.CDLL(ctypes.util.find_library("nfs") or "libnfs.so.13", use_errno=True)

c_ctx = ctypes.c_void_p
c_fh = ctypes.c_void_p


class NfsStat64(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "dev", "ino", "mode", "nlink", "uid", "gid", "rdev", "size",
        "blksize", "blocks", "atime", "mtime", "ctime",
        "atime_nsec", "mtime_nsec", "ctime_nsec", "used")]


class Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class NfsDirent(ctypes.Structure):
    pass


NfsDirent._fields_ = [
    ("next", ctypes.POINTER(NfsDirent)),
    ("name", ctypes.c_char_p),
    ("inode", ctypes.c_uint64),
    ("type", ctypes.c_uint32),
    ("mode", ctypes.c_uint32),
    ("size", ctypes.c_uint64),
    ("atime", Timeval), ("mtime", Timeval), ("ctime", Timeval),
    ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32),
    ("nlink", ctypes.c_uint32),
    ("dev", ctypes.c_uint64), ("rdev", ctypes.c_uint64),
    ("blksize", ctypes.c_uint64), ("blocks", ctypes.c_uint64),
    ("used", ctypes.c_uint64),
    ("atime_nsec", ctypes.c_uint32), ("mtime_nsec", ctypes.c_uint32),
    ("ctime_nsec", ctypes.c_uint32),
]


class NfsStatvfs64(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
        "f_ffree", "f_favail", "f_fsid", "f_flag", "f_namemax")]


def proto(name, res, *args):
    f = getattr(lib, name)
    f.restype = res
    f.argtypes = list(args)
    return f


CP = ctypes.c_char_p
INT = ctypes.c_int
U64 = ctypes.c_uint64
PFH = ctypes.POINTER(c_fh)
nfs_init_context = proto("nfs_init_context", c_ctx)
nfs_get_error = proto("nfs_get_error", CP, c_ctx)
nfs_set_version = proto("nfs_set_version", INT, c_ctx, INT)
nfs_set_dircache = proto("nfs_set_dircache", None, c_ctx, INT)
nfs_set_autoreconnect = proto("nfs_set_autoreconnect", None, c_ctx, INT)
nfs_set_timeout = proto("nfs_set_timeout", None, c_ctx, INT)
nfs_set_uid = proto("nfs_set_uid", None, c_ctx, INT)
nfs_set_gid = proto("nfs_set_gid", None, c_ctx, INT)
nfs_mount = proto("nfs_mount", INT, c_ctx, CP, CP)
nfs_umount = proto("nfs_umount", INT, c_ctx)
nfs_lstat64 = proto("nfs_lstat64", INT, c_ctx, CP, ctypes.POINTER(NfsStat64))
nfs_fstat64 = proto("nfs_fstat64", INT, c_ctx, c_fh, ctypes.POINTER(NfsStat64))
nfs_open2 = proto("nfs_open2", INT, c_ctx, CP, INT, INT, PFH)
nfs_create = proto("nfs_create", INT, c_ctx, CP, INT, INT, PFH)
nfs_close = proto("nfs_close", INT, c_ctx, c_fh)
nfs_pread = proto("nfs_pread", INT, c_ctx, c_fh, U64, U64, ctypes.c_void_p)
nfs_pwrite = proto("nfs_pwrite", INT, c_ctx, c_fh, U64, U64, ctypes.c_void_p)
nfs_fsync = proto("nfs_fsync", INT, c_ctx, c_fh)
nfs_truncate = proto("nfs_truncate", INT, c_ctx, CP, U64)
nfs_ftruncate = proto("nfs_ftruncate", INT, c_ctx, c_fh, U64)
nfs_mkdir2 = proto("nfs_mkdir2", INT, c_ctx, CP, INT)
nfs_rmdir = proto("nfs_rmdir", INT, c_ctx, CP)
nfs_unlink = proto("nfs_unlink", INT, c_ctx, CP)
nfs_opendir = proto("nfs_opendir", INT, c_ctx, CP, ctypes.POINTER(ctypes.c_void_p))
nfs_readdir = proto("nfs_readdir", ctypes.POINTER(NfsDirent), c_ctx, ctypes.c_void_p)
nfs_closedir = proto("nfs_closedir", None, c_ctx, ctypes.c_void_p)
nfs_statvfs64 = proto("nfs_statvfs64", INT, c_ctx, CP, ctypes.POINTER(NfsStatvfs64))
nfs_readlink = proto("nfs_readlink", INT, c_ctx, CP, ctypes.c_char_p, INT)
nfs_chmod = proto("nfs_chmod", INT, c_ctx, CP, INT)
nfs_chown = proto("nfs_chown", INT, c_ctx, CP, INT, INT)
nfs_utimes = proto("nfs_utimes", INT, c_ctx, CP, ctypes.POINTER(Timeval))
nfs_symlink = proto("nfs_symlink", INT, c_ctx, CP, CP)
nfs_rename = proto("nfs_rename", INT, c_ctx, CP, CP)
nfs_link = proto("nfs_link", INT, c_ctx, CP, CP)


#: Requests that nfsfuse answers without sending anything to the server.
LOCAL_OPS = frozenset({"flush", "opendir", "releasedir", "access", "release",
                       "init", "destroy", "ioctl"})


class NfsFuse(Operations):
    counts = None  # {request kind: number}, with --stats

    def __call__(self, op, *args):
        if self.counts is not None:
            # One increment: the count must not slow the path it measures.
            self.counts[op] = self.counts.get(op, 0) + 1
        return Operations.__call__(self, op, *args)

    def __init__(self, server, export, version):
        self.ctx = nfs_init_context()
        if not self.ctx:
            raise SystemExit("nfs_init_context failed")
        nfs_set_version(self.ctx, version)
        nfs_set_dircache(self.ctx, 0)
        nfs_set_autoreconnect(self.ctx, -1)
        # Ganesha silently drops some requests (e.g. a READ on a file handle
        # whose inode another client just deleted: "nfs3_FhandleToCache ...
        # non-retryable" in its log) and expects the client to retransmit.
        # libnfs never retransmits, so without a timeout the FUSE call hangs
        # forever.  Time out and retry instead, like a 'hard' kernel mount.
        nfs_set_timeout(self.ctx, self.TIMEOUT_MS)
        rc = nfs_mount(self.ctx, server.encode(), export.encode())
        if rc != 0:
            error = nfs_get_error(self.ctx).decode()
            raise SystemExit(f"nfs_mount({server}:{export} v{version}) failed: {error}")
        self._mtx = threading.Lock()
        self.handles = {}
        self.next_fh = 1

    TIMEOUT_MS = 2000
    RETRIES = 5
    timeouts = 0

    # helpers -------------------------------------------------------------
    def _retry(self, fn, args):
        """Call fn(ctx, *args) (lock held), retrying RPC timeouts."""
        for attempt in range(self.RETRIES):
            rc = fn(self.ctx, *args)
            error = (nfs_get_error(self.ctx) or b"").decode(errors="replace")
            if rc not in (-errno.ETIMEDOUT, -errno.EINTR) and not (
                    rc == -errno.EFAULT and "timed out" in error.lower()):
                return rc
            NfsFuse.timeouts += 1
            sys.stderr.write(f"nfsfuse: {fn.__name__} timed out ({error}), retry {attempt + 1}\n")
            sys.stderr.flush()
        return -errno.EIO

    def _chk(self, rc):
        if rc < 0:
            raise FuseOSError(-rc)
        return rc

    def _chk_io(self, rc):
        # libnfs reports a failed READ/WRITE/COMMIT (e.g. NFS3ERR_STALE after
        # another client removed the file) as -EFAULT; a kernel NFS client
        # would say ESTALE.
        if rc == -errno.EFAULT:
            rc = -errno.ESTALE
        return self._chk(rc)

    def _call_io(self, fn, *args):
        with self._mtx:
            return self._chk_io(self._retry(fn, args))

    def _call(self, fn, *args):
        with self._mtx:
            return self._chk(self._retry(fn, args))

    @staticmethod
    def _p(path):
        return path.encode()

    def _new_fh(self, ptr):
        with self._mtx:
            n = self.next_fh
            self.next_fh += 1
            self.handles[n] = ptr
        return n

    @staticmethod
    def _st(s):
        return dict(
            st_ino=s.ino, st_mode=s.mode, st_nlink=s.nlink, st_uid=s.uid,
            st_gid=s.gid, st_rdev=s.rdev, st_size=s.size,
            st_blocks=s.blocks, st_blksize=s.blksize or 4096,
            st_atime=s.atime + s.atime_nsec / 1e9,
            st_mtime=s.mtime + s.mtime_nsec / 1e9,
            st_ctime=s.ctime + s.ctime_nsec / 1e9)

    # metadata ------------------------------------------------------------
    def getattr(self, path, fi=None):
        s = NfsStat64()
        if fi is not None and fi.fh in self.handles:
            self._call_io(nfs_fstat64, self.handles[fi.fh], ctypes.byref(s))
        else:
            self._call(nfs_lstat64, self._p(path), ctypes.byref(s))
        return self._st(s)

    def readdir(self, path, fi):
        d = ctypes.c_void_p()
        with self._mtx:
            self._chk(self._retry(nfs_opendir, (self._p(path), ctypes.byref(d))))
            names = []
            while True:
                ent = nfs_readdir(self.ctx, d)
                if not ent:
                    break
                names.append(ent.contents.name.decode())
            nfs_closedir(self.ctx, d)
        return names

    def statfs(self, path):
        v = NfsStatvfs64()
        self._call(nfs_statvfs64, self._p(path), ctypes.byref(v))
        return {k: getattr(v, k) for k in (
            "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail",
            "f_files", "f_ffree", "f_favail", "f_namemax")}

    def readlink(self, path):
        buf = ctypes.create_string_buffer(4097)
        self._call(nfs_readlink, self._p(path), buf, 4096)
        return buf.value.decode()

    def chmod(self, path, mode):
        self._call(nfs_chmod, self._p(path), mode & 0o7777)

    def chown(self, path, uid, gid):
        self._call(nfs_chown, self._p(path), uid, gid)

    def utimens(self, path, times=None):
        if times is None:
            now = time.time()
            times = (now, now)
        tv = (Timeval * 2)()
        for i, t in enumerate(times):
            tv[i].tv_sec = int(t)
            tv[i].tv_usec = round((t - int(t)) * 1e6)
        self._call(nfs_utimes, self._p(path), tv)

    def truncate(self, path, length, fi=None):
        if fi is not None and fi.fh in self.handles:
            self._call(nfs_ftruncate, self.handles[fi.fh], length)
        else:
            self._call(nfs_truncate, self._p(path), length)

    # namespace -----------------------------------------------------------
    def mkdir(self, path, mode):
        self._call(nfs_mkdir2, self._p(path), mode & 0o7777)

    def rmdir(self, path):
        self._call(nfs_rmdir, self._p(path))

    def unlink(self, path):
        self._call(nfs_unlink, self._p(path))

    def symlink(self, target, source):
        # fusepy: symlink(link_path, target)
        self._call(nfs_symlink, source.encode(), self._p(target))

    def rename(self, old, new):
        self._call(nfs_rename, self._p(old), self._p(new))

    def link(self, target, source):
        # fusepy: link(new_path, existing_path)
        self._call(nfs_link, self._p(source), self._p(target))

    # files (raw_fi=True: we get/set fuse_file_info) ------------------------
    def create(self, path, mode, fi):
        fh = c_fh()
        flags = fi.flags | os.O_CREAT
        self._call(nfs_create, self._p(path), flags, mode & 0o7777, ctypes.byref(fh))
        fi.fh = self._new_fh(fh)
        fi.direct_io = 1
        return 0

    def open(self, path, fi):
        fh = c_fh()
        flags = fi.flags & ~(os.O_CREAT | os.O_EXCL)
        self._call(nfs_open2, self._p(path), flags, 0, ctypes.byref(fh))
        fi.fh = self._new_fh(fh)
        fi.direct_io = 1
        return 0

    def read(self, path, size, offset, fi):
        buf = ctypes.create_string_buffer(size)
        n = self._call_io(nfs_pread, self.handles[fi.fh], offset, size, buf)
        return buf.raw[:n]

    def write(self, path, data, offset, fi):
        return self._call_io(nfs_pwrite, self.handles[fi.fh], offset, len(data), data)

    def fsync(self, path, datasync, fi):
        self._call_io(nfs_fsync, self.handles[fi.fh])
        return 0

    def flush(self, path, fi):
        return 0

    def release(self, path, fi):
        with self._mtx:
            ptr = self.handles.pop(fi.fh, None)
            if ptr is not None:
                nfs_close(self.ctx, ptr)
        return 0

    def opendir(self, path):
        return 0

    def releasedir(self, path, fi):
        return 0

    def access(self, path, amode):
        return 0


STATS_EVERY = 0.1


def write_stats(ops, path):
    """Rewrite PATH with the counts whenever they changed (atomically: a reader never
    sees half a file). Runs as a daemon thread for the life of the mount."""
    last = None
    while True:
        now = dict(ops.counts)
        if now != last:
            tmp = f"{path}.tmp"
            with open(tmp, "w") as fh:
                json.dump({"counts": now, "local": sorted(LOCAL_OPS), "pid": os.getpid()}, fh)
            os.replace(tmp, path)
            last = now
        time.sleep(STATS_EVERY)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("server")
    ap.add_argument("export")
    ap.add_argument("mountpoint")
    ap.add_argument("--nfs-version", type=int, default=3, choices=(3, 4))
    ap.add_argument("--attr-timeout", type=float, default=0.0,
                    help="kernel attribute/dentry cache seconds (0 = always ask "
                         "the server; e.g. 3 to mimic a kernel NFS client's actimeo)")
    ap.add_argument("--stats", metavar="FILE",
                    help="count the requests by kind into FILE (JSON)")
    ap.add_argument("--debug", action="store_true")
    a = ap.parse_args()
    ops = NfsFuse(a.server, a.export, a.nfs_version)
    if a.stats:
        ops.counts = {}
        threading.Thread(target=write_stats, args=(ops, a.stats), daemon=True).start()
    FUSE(ops, a.mountpoint, foreground=True, nothreads=True, raw_fi=True,
         debug=a.debug, fsname=f"nfs{a.nfs_version}:{a.server}:{a.export}",
         subtype="nfsfuse", allow_other=True, use_ino=True,
         attr_timeout=a.attr_timeout, entry_timeout=a.attr_timeout,
         negative_timeout=a.attr_timeout)


if __name__ == "__main__":
    main()
