"""Peak memory of the running process, for the benchmarks that measure each library in a child.

The kernel's high-water mark of this process's own address space (``VmHWM``). Not ``os.wait4``'s
``ru_maxrss``: a child started by ``subprocess`` (vfork, then exec) inherits the parent's high-water
mark at exec, so a 13 MB child of a 1 GB parent reports 1 GB.
"""

from __future__ import annotations

import os


def peak_gb() -> float:
    """This process's peak resident set size in GiB (Linux ``/proc/self/status``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    raise RuntimeError("/proc/self/status has no VmHWM line (Linux only)")


def rss_gb() -> float:
    """This process's resident set size now, in GiB."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
