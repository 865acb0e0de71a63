"""Writing a user's file so that it is never half-written, never replaces
something that is not a regular file, and never outlives an interrupted run.

write_atomic() writes into a temporary file beside OUT and renames it over OUT
only when it is complete and synced: a reader, a crash or a full disk leaves
either the old OUT or the new one. The temporary file is created with mode
0666 minus the umask (what `cp` gives a new file); replacing a file keeps that
file's mode (and owner/group where permitted).

write_folder_atomic() does the same for a folder OUT (a Hugging Face model
folder): it is built in a temporary folder beside OUT and moved into place
when complete, so OUT is never seen half-written.

Temporary files (and folders) are named `.<OUT>.<pid>-<start>-<boot>-<random>.vitpe-tmp`:
the writer's PID, its start time (clock ticks since boot, /proc/PID/stat) and
the boot id. A SIGKILL cannot be caught, so a later run can prove such a file
stale -- written in an earlier boot, or by a PID that no longer runs or now
belongs to a process started at another time -- and remove it
(sweep_stale_temps). Catchable signals remove the temporary file at once
(cleanup_on_signals). A folder OUT that --force replaces on a system without
renameat2 is renamed aside first, to `.<OUT>.<pid>-<start>-<boot>-<random>.vitpe-old`:
a name the sweep never removes but reports, because after a crash between the
two renames that folder is the user's only copy of OUT.
"""
from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
import signal
import stat
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Set

TMP_SUFFIX = ".vitpe-tmp"
ASIDE_SUFFIX = ".vitpe-old"
_TMP_NAME = re.compile(r"^\.(.*)\.(\d+)-(\d+)-([0-9a-f]+)-[0-9a-z]+(" + re.escape(TMP_SUFFIX) + "|"
                       + re.escape(ASIDE_SUFFIX) + ")$", re.DOTALL)

_live_temps: Set[str] = set()       # temporary files this process is writing now
_signalled: Optional[int] = None    # the signal that interrupted this process, if any


class OutputError(Exception):
    """OUT cannot or must not be written; the message is one line for the user."""


class Interrupted(BaseException):
    """A SIGINT/SIGTERM/SIGHUP arrived (under cleanup_on_signals)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# -- who wrote a temporary file --------------------------------------------------

def _boot_id() -> Optional[str]:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip().replace("-", "")[:16]
    except OSError:
        return None


def _start_time(pid: int) -> Optional[str]:
    """The process's start time in clock ticks since boot; None if no such process.
    Raises OSError when it cannot be told (no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        if not os.path.isdir("/proc/self"):
            raise OSError(errno.ENOENT, "no /proc")
        return None
    # comm (field 2) may hold spaces and parentheses: count fields after its last ')'
    return data[data.rindex(b")") + 2:].split()[19].decode()


def _temp_name(out_name: str, suffix: str = TMP_SUFFIX) -> str:
    pid = os.getpid()
    try:
        start = _start_time(pid) or "0"
    except OSError:
        start = "0"
    base = out_name.encode()[:150].decode(errors="ignore")  # the whole name must stay under 255 bytes
    return f".{base}.{pid}-{start}-{_boot_id() or '0'}-{secrets.token_hex(4)}{suffix}"


def temp_state(name: str) -> str:
    """'stale' (its writer provably no longer runs), 'live' or 'unknown'."""
    match = _TMP_NAME.search(name)
    boot = _boot_id()
    if match is None or boot is None or match.group(4) == "0" or match.group(3) == "0":
        return "unknown"
    if match.group(4) != boot:
        return "stale"  # written before the last reboot
    try:
        start = _start_time(int(match.group(2)))
    except (OSError, ValueError, IndexError):
        return "unknown"
    return "live" if start == match.group(3) else "stale"  # gone, or the PID was reused


def _aside_note(entry: os.DirEntry) -> str:
    original = os.path.join(os.path.dirname(entry.path), _TMP_NAME.search(entry.name).group(1))
    if os.path.lexists(original):
        return (f"{entry.path}: the previous {original}, moved aside by a vitpe run interrupted while replacing "
                f"it; vitpe never deletes it: {original} is newer, delete this copy if you do not need it")
    return (f"{entry.path}: your folder {original}, moved aside by a vitpe run interrupted while replacing it; "
            f"vitpe never deletes it: rename it back to {original}")


def sweep_stale_temps(folder) -> List[str]:
    """Remove this user's provably stale vitpe temporary files in folder; a
    line for each one removed, each one that cannot be proven stale, and each
    folder an interrupted run left renamed aside (never removed)."""
    notes = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return notes
    for entry in entries:
        aside = entry.name.endswith(ASIDE_SUFFIX) and _TMP_NAME.search(entry.name) is not None
        if not (entry.name.startswith(".") and (entry.name.endswith(TMP_SUFFIX) or aside)):
            continue
        path = entry.path
        state = temp_state(entry.name)
        if state == "live":
            continue  # another vitpe is writing it now
        if aside:
            notes.append(_aside_note(entry))
            continue
        try:
            mine = entry.stat(follow_symlinks=False).st_uid == os.getuid()
        except OSError:
            continue
        is_folder = entry.is_dir(follow_symlinks=False)  # write_folder_atomic's; never a link followed
        what = "folder" if is_folder else "file"
        if state == "stale" and mine and (is_folder or entry.is_file(follow_symlinks=False)):
            try:
                shutil.rmtree(path) if is_folder else os.unlink(path)
            except OSError as exc:
                notes.append(f"{path}: stale temporary {what} of a killed vitpe run; cannot remove it "
                             f"({exc.strerror})")
            else:
                pid = _TMP_NAME.search(entry.name).group(2)
                notes.append(f"removed {path}: temporary {what} of vitpe process {pid}, which ended without "
                             f"finishing it (killed?)")
        else:
            notes.append(f"{path}: temporary {what} of an interrupted vitpe run, left in place (cannot tell "
                         f"whether its writer is gone); delete it when no vitpe writes to this folder")
    return notes


# -- signals ---------------------------------------------------------------------

def _on_signal(signum, frame):
    global _signalled
    _signalled = signum
    for path in list(_live_temps):  # at once: the exception below may be delayed or rewrapped by C++ code
        with suppress(OSError):
            os.unlink(path)
    raise Interrupted(signum)


@contextmanager
def cleanup_on_signals(signums=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Turn these signals into Interrupted, removing any temporary file first.
    A signal the process ignores (nohup) stays ignored."""
    global _signalled
    previous = {}
    for signum in signums:
        with suppress(ValueError, OSError):  # not the main thread: leave signals alone
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _signalled = None


# -- checking and writing OUT ----------------------------------------------------

_KINDS = ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "FIFO"),
          (stat.S_ISSOCK, "socket"))


def _lstat_output(path: Path, need_folder: bool, noun: str) -> Optional[os.stat_result]:
    """The lstat of an OUT (None if it does not exist yet), refusing what no
    output may be: a missing parent folder (need_folder), an unreadable path,
    a symbolic link. noun: what OUT is ("file" or "folder"), for the message."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if need_folder and not path.parent.is_dir():
            raise OutputError(f"{path.parent}: no such directory for the output") from None
        return None
    except OSError as exc:
        raise OutputError(f"{path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(f"{path}: is a symbolic link (to {os.readlink(path)}); vitpe does not write through "
                          f"links: give the path of the {noun} itself, or remove the link")
    return st


def check_output(path, overwrite: bool, exists_hint: str = "pass --force to overwrite it",
                 need_folder: bool = True) -> Optional[os.stat_result]:
    """Refuse an OUT that must not be written; the stat of the regular file it
    would replace, or None for a new file."""
    path = Path(path)
    st = _lstat_output(path, need_folder, "file")
    if st is None:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path}: is a directory; give the output file's name")
    for test, kind in _KINDS:
        if test(st.st_mode):
            raise OutputError(f"{path}: is a {kind}, not a regular file; vitpe writes only regular files "
                              f"(not even with --force)")
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path}: is not a regular file; vitpe writes only regular files")
    if not overwrite:
        raise OutputError(f"{path}: exists; {exists_hint}")
    return st


class _Sink:
    """OUT's file object as the writer sees it: remembers the first OSError of a
    write, because torch.save reports a failed write as an unrelated
    RuntimeError ("unexpected pos ..."). No fileno(): every byte goes through
    write()."""

    def __init__(self, f):
        self._f, self.error = f, None

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str) -> Any:
        if name == "fileno":
            raise AttributeError(name)
        return getattr(self._f, name)


def _why(exc: OSError) -> str:
    hint = {errno.EFBIG: " (the file-size limit, ulimit -f)", errno.ENOSPC: " (disk full)",
            errno.EDQUOT: " (disk quota)"}.get(exc.errno, "")
    return f"{exc.strerror or exc}{hint}"


def _fsync_folder(folder: str) -> None:
    with suppress(OSError):  # not every file system can sync a directory
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _commit(tmp: str, out: Path, overwrite: bool, exists_hint: str) -> None:
    if overwrite:
        check_output(out, True)  # OUT may have turned into a link or a FIFO while we wrote
        os.replace(tmp, out)
        return
    try:
        os.link(tmp, out)  # fails if OUT appeared meanwhile: no-clobber, atomically
    except FileExistsError:
        raise OutputError(f"{out}: exists (created while vitpe wrote); {exists_hint}") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        check_output(out, False, exists_hint)  # no hard links here: check, then rename
        os.replace(tmp, out)
    else:
        os.unlink(tmp)


def write_atomic(out_path, write: Callable[[Any], None], overwrite: bool = False,
                 exists_hint: str = "pass --force to overwrite it") -> None:
    """Write OUT through write(file) into a temporary file beside it, then
    rename. Raises OutputError (one line) when OUT must not or cannot be
    written; any other exception of write() passes through. On every failure
    the temporary file is gone and OUT is as it was."""
    out = Path(out_path)
    old = check_output(out, overwrite, exists_hint)
    folder = str(out.parent)
    tmp = os.path.join(folder, _temp_name(out.name))
    _live_temps.add(tmp)  # before it exists: a signal in between must still remove it
    sink = None
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise OutputError(f"{out}: cannot create a file in {folder} ({exc.strerror})") from None
        with os.fdopen(fd, "wb") as f:
            if old is not None:
                os.fchmod(fd, stat.S_IMODE(old.st_mode))
                with suppress(OSError):  # only root may give a file away
                    os.fchown(fd, old.st_uid, old.st_gid)
            sink = _Sink(f)
            write(sink)
            f.flush()
            os.fsync(fd)
        _commit(tmp, out, overwrite, exists_hint)
        _fsync_folder(folder)
    except BaseException as exc:
        with suppress(OSError):
            os.unlink(tmp)
        if _signalled is not None and not isinstance(exc, Interrupted):
            raise Interrupted(_signalled) from None  # C++ code turned the signal's exception into another
        error = sink.error if sink is not None and sink.error is not None else exc
        if isinstance(error, OSError) and not isinstance(exc, Interrupted):
            state = "left as it was" if old is not None else "not created"
            raise OutputError(f"{out}: write failed: {_why(error)}; {out.name} {state}") from None
        raise
    finally:
        _live_temps.discard(tmp)


# -- writing a folder ------------------------------------------------------------

_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2  # renameat2(2) flags (linux/fs.h)
_AT_FDCWD = -100


def _renameat2(src: str, dst: str, flags: int) -> bool:
    """renameat2(src, dst, flags); False where the C library or the file
    system lacks it (the caller falls back to plain renames). Python's os has
    no renameat2; glibc has had it since 2.28."""
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    func.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    if func(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), dst)


def check_output_folder(path, overwrite: bool, exists_hint: str = "pass --force to replace it",
                        need_folder: bool = True) -> bool:
    """Refuse a folder OUT that must not be written; True when OUT exists
    (a real folder, replaced only with overwrite)."""
    path = Path(path)
    st = _lstat_output(path, need_folder, "folder")
    if st is None:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path}: exists and is not a folder; the output is a folder: give another name "
                          f"(vitpe does not replace a file with a folder, not even with --force)")
    if not overwrite:
        raise OutputError(f"{path}: exists; {exists_hint}")
    return True


def write_folder_atomic(out_path, fill: Callable[[Path], None], overwrite: bool = False,
                        exists_hint: str = "pass --force to replace it") -> None:
    """Build the folder OUT through fill(folder) in a temporary folder beside
    it, then move it into place. Raises OutputError (one line) when OUT must
    not or cannot be written; any other exception of fill() passes through.
    On every failure the temporary folder is gone and OUT is as it was.

    A new OUT appears by one rename that refuses an OUT created meanwhile.
    With overwrite, an existing OUT is exchanged with the new folder in one
    step (renameat2 RENAME_EXCHANGE) and then removed, so OUT never goes
    missing; where the system cannot exchange, OUT is renamed aside first
    (ASIDE_SUFFIX: a crash between the two renames leaves the old OUT there,
    which the next run reports and never removes)."""
    out = Path(out_path)
    existed = check_output_folder(out, overwrite, exists_hint)
    tmp = out.parent / _temp_name(out.name)
    old = None  # after the exchange: the replaced OUT, to remove
    moving = False  # fill() is done; OUT is being put in place
    try:
        try:
            os.mkdir(tmp)
        except OSError as exc:
            raise OutputError(f"{out}: cannot create a folder in {out.parent} ({exc.strerror})") from None
        fill(tmp)
        _fsync_folder(str(tmp))
        moving = True
        if existed:
            check_output_folder(out, True)  # OUT may have turned into a link or a file while we wrote
            if _renameat2(str(tmp), str(out), _RENAME_EXCHANGE):
                old = tmp
            else:
                aside = out.parent / _temp_name(out.name, ASIDE_SUFFIX)
                os.rename(out, aside)
                try:
                    os.rename(tmp, out)
                except BaseException:
                    with suppress(OSError):
                        os.rename(aside, out)  # put OUT back
                    raise
                # OUT is replaced: the old one becomes a temporary folder before it is deleted, so a
                # crash while deleting it leaves one the next sweep removes, not a half-deleted "old OUT"
                old = out.parent / _temp_name(out.name)
                try:
                    os.rename(aside, old)
                except OSError:
                    old = aside
        elif not _renameat2(str(tmp), str(out), _RENAME_NOREPLACE):
            check_output_folder(out, False, exists_hint)  # no renameat2 here: check, then rename
            os.rename(tmp, out)
        _fsync_folder(str(out.parent))
    except BaseException as exc:
        if old is None:
            shutil.rmtree(tmp, ignore_errors=True)
        if _signalled is not None and not isinstance(exc, Interrupted):
            raise Interrupted(_signalled) from None
        if moving and isinstance(exc, OSError) and exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise OutputError(f"{out}: exists (created while vitpe wrote); {exists_hint}") from None
        if isinstance(exc, OSError) and old is None:
            state = "left as it was" if existed else "not created"
            raise OutputError(f"{out}: write failed: {_why(exc)}; {out.name} {state}") from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # the replaced OUT; a leftover is reported by the next sweep
