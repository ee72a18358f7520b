"""Child processes that die with their parent, even when the parent is killed with SIGKILL.

A generator's pool workers and a sweep's generator and trainer processes would otherwise run on
(adopted by init), keep writing into the folder and keep its lock, so that a rerun is refused
or two processes write the same files. On Linux the kernel signals the child when its parent
dies (prctl PR_SET_PDEATHSIG); elsewhere the child watches its parent's pid.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
POLL_S = 0.2  # how often the portable fallback looks at the parent's pid


def _load_prctl():
    # resolved once in the parent: loading a library between fork and exec is not safe
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def kernel_deathsig(sig: int) -> bool:
    """Ask the kernel to send `sig` to this process when its parent dies; False where it cannot."""
    if _PRCTL is None:
        return False
    return _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def exit_if_orphaned(parent_pid: int) -> None:
    """Exit at once, quietly, when the parent that started us is gone (our parent pid changed)."""
    if os.getppid() != parent_pid:
        os._exit(0)


def _watch(parent_pid: int) -> None:
    while True:
        exit_if_orphaned(parent_pid)
        time.sleep(POLL_S)


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL, use_kernel: bool = True) -> None:
    """Call first thing in a child process (Python code, not an exec'd program): it ends when
    `parent_pid` does, by the kernel's signal where available, else by a watching thread."""
    if use_kernel and kernel_deathsig(sig):
        exit_if_orphaned(parent_pid)  # the parent may have died before prctl took effect
        return
    threading.Thread(target=_watch, args=(parent_pid,), daemon=True, name="die-with-parent").start()


def quiet_broken_pipe() -> None:
    """A write to a pipe whose reader died ends the process silently instead of raising
    BrokenPipeError (whose traceback a dead parent's pool worker would otherwise print)."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def preexec_for(parent_pid: int, sig: int = signal.SIGTERM):
    """A subprocess preexec_fn that makes the exec'd program receive `sig` when `parent_pid`
    dies, or None where the kernel cannot do that (then `watched` wraps the command instead)."""
    if _PRCTL is None or os.name != "posix":
        return None

    def preexec():
        kernel_deathsig(sig)
        if os.getppid() != parent_pid:  # the parent died between fork and prctl
            os._exit(1)
    return preexec


def watched(argv: list[str], parent_pid: int) -> list[str]:
    """`argv` run under a small Python guard that stops it when `parent_pid` dies: the portable
    fallback for programs we cannot change from inside (the guard itself watches the parent)."""
    return [sys.executable, "-m", "onepfrac.lifetime", str(parent_pid), "--", *argv]


def _guard(parent_pid: int, argv: list[str]) -> int:
    import subprocess

    if hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the child itself; wait for it
    child = subprocess.Popen(argv)
    while True:
        try:
            return child.wait(timeout=POLL_S)
        except subprocess.TimeoutExpired:
            if os.getppid() != parent_pid:
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                return 1


if __name__ == "__main__":
    sys.exit(_guard(int(sys.argv[1]), sys.argv[3:]))
