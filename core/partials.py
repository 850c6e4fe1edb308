"""Temporary output files that say which run writes them, so crash leftovers can be told from
the files of a run still going, and a lock that keeps two runs from interleaving their commits.

A run killed with SIGKILL, or a QGIS crash, never gets to remove its `.partial.tif` files. Their
names carry the host and process id of the run (`.<stem>.<host>-<pid>-<random>.partial.tif`),
so the next run into the same folder removes those whose process is gone and leaves alone
those of live runs (and, on a shared folder, those of other machines).
"""
import hashlib
import os
import re
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

PARTIAL_SUFFIX = ".partial.tif"
_OWNED = re.compile(r"^\..*\.([0-9a-f]{6})-(\d+)-[0-9a-f]+\.partial\.tif(\..*)?$")
# Partial files of versions whose names did not say who wrote them: removed once clearly old.
_ANONYMOUS = re.compile(r"^\..*\.[0-9a-f]{12}\.partial\.tif(\..*)?$")
ANONYMOUS_MAX_AGE_S = 24 * 3600
# A commit is two renames; a lock held longer than this belongs to a stuck process.
LOCK_WAIT_S = 60.0
_LOCK_POLL_S = 0.05


def host_id() -> str:
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]


def owner_token() -> str:
    """`<host>-<pid>-<random>`: who writes a temporary file, unique per file."""
    return f"{host_id()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def partial_path(target: Path) -> Path:
    """A hidden, unique temporary name beside `target` that names its writer.

    The stem is cut short so that a target name near the file system's length limit still
    leaves room for the temporary one.
    """
    return target.with_name(f".{target.stem[:40]}.{owner_token()}{PARTIAL_SUFFIX}")


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (never signals it)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":
        import ctypes
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.OpenProcess.restype = wintypes.HANDLE
        handle = kernel32.OpenProcess(0x1000, False, pid)   # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5   # ERROR_ACCESS_DENIED: it exists
        try:
            code = wintypes.DWORD()
            kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
            return code.value == 259   # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(folder: Path) -> list:
    """Remove the temporary files dead runs of this machine left in `folder`; returns their
    names. Files of live runs and of other machines stay."""
    removed, here = [], host_id()
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        owned = _OWNED.match(entry.name)
        try:
            if owned:
                stale = owned.group(1) == here and not process_alive(int(owned.group(2)))
            else:
                stale = bool(_ANONYMOUS.match(entry.name)) and \
                    now - entry.stat().st_mtime > ANONYMOUS_MAX_AGE_S
            if stale and entry.is_file():
                entry.unlink()
                removed.append(entry.name)
        except OSError:   # gone meanwhile, or not ours to remove: never fail a run for it
            continue
    return removed


@contextmanager
def commit_lock(target: Path):
    """Hold `.<target name>.lock` beside `target` while a run gives its outputs their names.

    Taken with O_EXCL, so only one run commits to a target at a time; a lock whose process is
    gone (a run killed mid-commit) is broken, a live one is waited for.
    """
    lock = target.with_name(f".{target.name}.lock")
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _lock_is_stale(lock) or time.monotonic() > deadline:
                try:
                    lock.unlink()
                except FileNotFoundError:
                    pass
                continue
            time.sleep(_LOCK_POLL_S)
            continue
        break
    try:
        os.write(fd, owner_token().encode())
        os.close(fd)
        yield
    finally:
        try:
            lock.unlink()
        except FileNotFoundError:
            pass


def _lock_is_stale(lock: Path) -> bool:
    try:
        owner = lock.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return False
    parts = owner.split("-")
    if len(parts) < 2 or not parts[1].isdigit():
        # Being written right now, or unreadable: stale only once clearly old.
        try:
            return time.time() - lock.stat().st_mtime > LOCK_WAIT_S
        except OSError:
            return False
    return parts[0] == host_id() and not process_alive(int(parts[1]))
