"""Child processes that end with their parent, by the kernel's parent-death signal (Linux ``prctl(2)``).

A child that only watches its parent from a thread (Dask's lifeline pipe) needs that thread to get the GIL, and a
child forked by a server (``panel serve --num-procs``) watches nothing at all: both kept running after their parent
was killed. The parent-death signal needs neither. Elsewhere (not Linux/glibc) this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal

#: prctl(2) option: the signal this process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None, sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies; returns whether that is in place.

    A parent already gone by now (killed while this child was starting) means exit at once: the signal would never
    come. Gone means: not ``parent_pid`` when given, otherwise a parent running another program (an orphan is
    adopted by init or a subreaper; a forked child runs its parent's program).
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))
    except (OSError, AttributeError):  # not Linux/glibc
        return False
    parent = os.getppid()
    if parent_pid is not None:
        gone = parent != parent_pid
    else:
        try:
            gone = os.readlink(f"/proc/{parent}/exe") != os.readlink("/proc/self/exe")
        except OSError:  # no /proc, or the parent's is not ours to read: only init means orphaned
            gone = parent == 1
    if gone:
        os._exit(1)
    return True
