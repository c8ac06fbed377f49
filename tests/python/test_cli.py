"""`ringmq passwd` as a person at a terminal uses it: run under a real
pseudo-terminal, it prompts twice and does not echo what is typed."""

from __future__ import annotations

import os
import pty
import select
import time

from conftest import TIMEOUT, ringmq_bin


def _read_until(fd: int, marker: bytes, seen: bytearray) -> None:
    """Reads the terminal into `seen` until `marker` shows or TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} on the terminal; saw {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                chunk = b""
            assert chunk, f"terminal closed before {marker!r}; saw {bytes(seen)!r}"
            seen.extend(chunk)


def _drain(fd: int, seen: bytearray) -> None:
    """Reads what is left until the child closes the terminal (or TIMEOUT)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not ready:
            return
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            return
        if not chunk:
            return
        seen.extend(chunk)


def _passwd_on_a_tty(path, user: str, first: str, second: str) -> tuple[int, bytes]:
    """Types `first` and `second` at the two prompts; returns the exit code
    and everything the terminal showed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: ringmq with the pty as its terminal
        try:
            os.execv(ringmq_bin(), [ringmq_bin(), "passwd", str(path), user])
        finally:
            os._exit(127)
    seen = bytearray()
    try:
        _read_until(fd, b"Password: ", seen)
        os.write(fd, first.encode() + b"\n")
        if first:
            _read_until(fd, b"Password again: ", seen)
            os.write(fd, second.encode() + b"\n")
        _drain(fd, seen)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), bytes(seen)


def test_passwd_on_a_terminal_prompts_twice_without_echo(tmp_path):
    path = tmp_path / "passwd"
    code, shown = _passwd_on_a_tty(path, "alice", "hunter2-secret", "hunter2-secret")
    assert code == 0, shown
    assert b"hunter2-secret" not in shown, f"the password was echoed: {shown!r}"
    assert path.read_text().startswith("alice:$argon2id$")
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_passwd_on_a_terminal_refuses_a_mismatch_and_an_empty_password(tmp_path):
    path = tmp_path / "passwd"
    code, shown = _passwd_on_a_tty(path, "alice", "one-thing", "another-thing")
    assert code == 2, shown
    assert b"differ" in shown
    code, shown = _passwd_on_a_tty(path, "alice", "", "")
    assert code == 2, shown
    assert b"empty" in shown
    assert not path.exists(), "nothing written"
