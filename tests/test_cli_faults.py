"""`vitpe resize` under faults: signals and SIGKILL mid-write, a file-size
limit, a read-only folder, OUT that is a FIFO/device/socket/directory/symlink,
IN == OUT. Every time: one line on stderr, a non-zero status, IN byte for
byte intact, no partial OUT and no temporary file left.

The writes that are interrupted are real: a child process resizes a
checkpoint carrying a 32 MB tensor, and this process stops it (SIGSTOP) as
soon as its temporary file appears, sends the signal, and lets it go on."""
from __future__ import annotations

import hashlib
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_checkpoint import make_state
from test_cli import assert_one_line_error, run, save

REPO = Path(__file__).resolve().parents[1]
HAS_PROC = os.path.exists("/proc/self/stat")


def digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def temps(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".vitpe-tmp"))


def child(args, cwd, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "vitpe_ext", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """IN with a 32 MB tensor beside a tiny table: writing OUT takes long enough to be caught."""
    folder = tmp_path_factory.mktemp("big")
    state = make_state("timm")
    state["blocks.0.big"] = torch.randn(8 << 20)
    path = folder / "in.pth"
    torch.save(state, path)
    return path, digest(path)


def _default_signals():
    # a test run started in the background may ignore SIGINT/SIGHUP, and a child inherits that
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)


def _interrupt_mid_write(src, out, signum, force=False):
    proc = child(["resize", src, out, "--image-size", "128"] + (["--force"] if force else []), out.parent,
                 preexec_fn=_default_signals)
    deadline = time.monotonic() + 60
    while not temps(out.parent):
        assert proc.poll() is None, ("finished before its temporary file was seen", proc.communicate())
        assert time.monotonic() < deadline
        time.sleep(0.0002)
    os.kill(proc.pid, signal.SIGSTOP)  # frozen with its temporary file half-written
    try:
        assert temps(out.parent)
        os.kill(proc.pid, signum)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


# -- signals ---------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_mid_write_removes_the_temporary_file(tmp_path, big, signum):
    src, before = big
    out = tmp_path / "out.pth"
    force = signum == signal.SIGTERM  # one case replaces an existing OUT: it must survive intact
    if force:
        out.write_bytes(b"the user's old OUT")
    code, err = _interrupt_mid_write(src, out, signum, force)
    name = signal.Signals(signum).name
    assert code == 128 + signum, err
    assert err.strip().splitlines() == [f"vitpe resize: interrupted by {name}; no partial output left"], err
    assert name != "SIGTERM" or err == "vitpe resize: interrupted by SIGTERM; no partial output left\n"
    assert temps(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == (["out.pth"] if force else [])
    if force:
        assert out.read_bytes() == b"the user's old OUT"
    assert digest(src) == before


@pytest.mark.skipif(not HAS_PROC, reason="proving a temporary file stale needs /proc")
def test_sigkill_leaves_a_temporary_file_that_the_next_run_removes(tmp_path, big, capsys):
    src, before = big
    out = tmp_path / "out.pth"
    code, _ = _interrupt_mid_write(src, out, signal.SIGKILL)
    assert code == -signal.SIGKILL
    [left] = temps(tmp_path)
    assert not out.exists() and digest(src) == before
    small = save(tmp_path, make_state("timm"), "small.pth")
    code, _, err = run(["resize", small, out, "--image-size", "128"], capsys)
    assert code == 0, err
    assert f"vitpe resize: note: removed {tmp_path / left}: temporary file of vitpe process" in err
    assert "which ended without finishing it (killed?)" in err
    assert temps(tmp_path) == [] and out.exists()


@pytest.mark.skipif(not HAS_PROC, reason="proving a temporary file stale needs /proc")
def test_only_provably_stale_temporary_files_are_removed(tmp_path, capsys):
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip().replace("-", "")[:16]
    with open("/proc/self/stat", "rb") as f:
        my_start = f.read().rsplit(b")", 1)[1].split()[19].decode()
    gone = subprocess.Popen(["true"])
    gone.wait()
    names = {
        "dead": f".o.pth.{gone.pid}-1-{boot}-aaaa0000.vitpe-tmp",            # its PID no longer runs
        "reboot": f".o.pth.{os.getpid()}-{my_start}-0123456789abcdef-bbbb0000.vitpe-tmp",  # another boot
        "live": f".o.pth.{os.getpid()}-{my_start}-{boot}-cccc0000.vitpe-tmp",  # this process: still writing
        "unknown": ".o.pth.k3j4h5.vitpe-tmp",                                  # no writer recorded
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    src = save(tmp_path, make_state("timm"))
    code, _, err = run(["resize", src, tmp_path / "o.pth", "--image-size", "128"], capsys)
    assert code == 0, err
    assert temps(tmp_path) == sorted([names["live"], names["unknown"]])
    notes = [line for line in err.splitlines() if "note:" in line]
    assert len(notes) == 3, err
    assert (f"vitpe resize: note: {tmp_path / names['unknown']}: temporary file of an interrupted vitpe run, left "
            f"in place (cannot tell whether its writer is gone); delete it when no vitpe writes to this folder") in err
    assert names["live"] not in err


# -- failed writes -----------------------------------------------------------------------

def _limit_file_size(limit):
    def preexec():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return preexec


def test_file_size_limit(tmp_path, big):
    src, before = big
    out = tmp_path / "out.pth"
    proc = child(["resize", src, out, "--image-size", "128"], tmp_path, preexec_fn=_limit_file_size(1 << 20))
    _, err = proc.communicate(timeout=120)
    assert_one_line_error(proc.returncode, err, f"{out}: write failed: File too large (the file-size limit, "
                                                f"ulimit -f); out.pth not created")
    assert os.listdir(tmp_path) == [] and digest(src) == before


def test_file_size_limit_in_directory_mode(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    torch.save(make_state("timm", seed=1), src / "a_small.pth")
    state = make_state("timm", seed=2)
    state["big"] = torch.randn(1 << 18)  # 1 MB
    torch.save(state, src / "b_big.pth")
    before = {p.name: digest(p) for p in src.iterdir()}
    proc = child(["resize", src, tmp_path / "out", "--image-size", "128"], tmp_path,
                 preexec_fn=_limit_file_size(256 << 10))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    errors = [line for line in err.splitlines() if not line.startswith("[")]
    assert errors == [f"vitpe resize: error: {tmp_path / 'out' / 'b_big.pth'}: write failed: File too large "
                      f"(the file-size limit, ulimit -f); b_big.pth not created",
                      "vitpe resize: 1 of 2 checkpoints failed"], err
    assert os.listdir(tmp_path / "out") == ["a_small.pth"]  # the run went on
    assert {p.name: digest(p) for p in src.iterdir()} == before
    # every file failing leaves no OUT folder at all
    proc = child(["resize", src, tmp_path / "out2", "--image-size", "128"], tmp_path,
                 preexec_fn=_limit_file_size(1 << 10))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "2 of 2 checkpoints failed" in err
    assert not (tmp_path / "out2").exists()


def _without_dac_override():
    # root ignores permission bits through CAP_DAC_OVERRIDE; dropping it from the bounding set
    # (prctl PR_CAPBSET_DROP) keeps it out of the exec'd child too
    import ctypes
    if os.geteuid() == 0 and ctypes.CDLL(None, use_errno=True).prctl(24, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_DAC_OVERRIDE)")


def test_read_only_folder(tmp_path):
    src = save(tmp_path, make_state("timm"))
    before = digest(src)
    os.chmod(tmp_path, 0o555)
    try:
        probe = subprocess.run([sys.executable, "-c", f"open({str(tmp_path / 'probe')!r}, 'w')"],
                               preexec_fn=_without_dac_override, capture_output=True)
        if probe.returncode == 0:
            pytest.skip("this process writes into a read-only folder anyway")
        proc = child(["resize", src, tmp_path / "o.pth", "--image-size", "128"], tmp_path,
                     preexec_fn=_without_dac_override)
        _, err = proc.communicate(timeout=120)
        assert_one_line_error(proc.returncode, err, f"{tmp_path / 'o.pth'}: cannot create a file in {tmp_path} "
                                                    f"(Permission denied)")
        assert os.listdir(tmp_path) == ["in.pth"] and digest(src) == before
    finally:
        os.chmod(tmp_path, 0o755)


# -- what OUT is -------------------------------------------------------------------------

def _make(kind, path: Path, target: Path):
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        return sock
    elif kind == "directory":
        path.mkdir()
    elif kind == "symlink":
        path.symlink_to(target)
    elif kind == "dangling symlink":
        path.symlink_to(path.parent / "nowhere.pth")
    return None


@pytest.mark.parametrize("kind,message", [
    ("fifo", "is a FIFO, not a regular file; vitpe writes only regular files (not even with --force)"),
    ("socket", "is a socket, not a regular file"),
    ("directory", "is a directory; give the output file's name"),
    ("symlink", "is a symbolic link (to "),
    ("dangling symlink", "is a symbolic link (to "),
])
def test_out_that_is_not_a_regular_file_is_refused_even_with_force(tmp_path, capsys, kind, message):
    src = save(tmp_path, make_state("timm"))
    other = tmp_path / "other.pth"
    other.write_bytes(b"the link's target")
    out = tmp_path / "o.pth"
    sock = _make(kind, out, other)
    try:
        listing = sorted(os.listdir(tmp_path))
        before = os.lstat(out)
        for flags in ([], ["--force"]):
            code, _, err = run(["resize", src, out, "--image-size", "128"] + flags, capsys)
            assert_one_line_error(code, err, f"{out}: {message}")
            if "symlink" in kind:
                assert "vitpe does not write through links: give the path of the file itself, or remove the link" in err
        after = os.lstat(out)
        assert stat.S_IFMT(after.st_mode) == stat.S_IFMT(before.st_mode) and after.st_ino == before.st_ino
        assert sorted(os.listdir(tmp_path)) == listing and other.read_bytes() == b"the link's target"
    finally:
        if sock is not None:
            sock.close()


def test_device_out_is_refused(tmp_path, capsys):
    # a node of its own, like /dev/full (1, 7): were the check to regress, the test replaces only this one
    device = tmp_path / "full.pth"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except OSError as exc:
        pytest.skip(f"cannot make a device node here: {exc.strerror}")
    src = save(tmp_path, make_state("timm"))
    code, _, err = run(["resize", src, device, "--image-size", "128", "--force"], capsys)
    assert_one_line_error(code, err, f"{device}: is a character device, not a regular file")
    assert stat.S_ISCHR(os.lstat(device).st_mode)


def test_in_is_out_through_links_with_force_and_any_extension(tmp_path, capsys):
    from safetensors.torch import save_file
    src = tmp_path / "in.safetensors"
    save_file(dict(make_state("timm")), src)
    before = digest(src)
    (tmp_path / "hard.pth").hardlink_to(src)
    (tmp_path / "soft.safetensors").symlink_to(src)
    for alias in (src, tmp_path / "hard.pth", tmp_path / "soft.safetensors"):
        code, _, err = run(["resize", src, alias, "--image-size", "128", "--force"], capsys)
        assert_one_line_error(code, err, f"{alias}: is the input file; write the result to another path")
    assert digest(src) == before and temps(tmp_path) == []


# -- the mode of OUT ---------------------------------------------------------------------

@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_out_follows_the_umask(tmp_path, capsys, umask, mode):
    src = save(tmp_path, make_state("timm"))
    old = os.umask(umask)
    try:
        code, _, err = run(["resize", src, tmp_path / "o.safetensors", "--image-size", "128"], capsys)
    finally:
        os.umask(old)
    assert code == 0, err
    assert stat.S_IMODE(os.stat(tmp_path / "o.safetensors").st_mode) == mode


def test_force_keeps_the_mode_of_the_replaced_file(tmp_path, capsys):
    src = save(tmp_path, make_state("timm"))
    out = tmp_path / "o.pth"
    out.write_bytes(b"old")
    os.chmod(out, 0o640)
    code, _, err = run(["resize", src, out, "--image-size", "128", "--force"], capsys)
    assert code == 0, err
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640 and out.read_bytes() != b"old"
