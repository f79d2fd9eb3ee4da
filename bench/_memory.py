"""A process's memory as the kernel counts it (Linux /proc/self/status), for the memory benches.

``VmHWM`` (the peak RSS) can be reset to the current RSS through /proc/self/clear_refs, so the
peak of one piece of work can be read after it. RSS counts the pages of memory-mapped files the
process touched (page cache the kernel may drop) as well as its own memory; ``RssAnon`` is its
own memory alone, which has no peak counter, so :class:`RSSSampler` samples it.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass


def proc_status_kb(field: str) -> int:
    """A ``kB`` field (VmRSS, VmHWM, RssAnon) of /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def code_kb() -> int:
    """Resident kB of the process's mapped executables and shared libraries (/proc/self/smaps):
    code paged in on first use (OpenBLAS at the first np.dot...), which RSS counts, not data."""
    total, code = 0, False
    with open("/proc/self/smaps", encoding="utf-8", errors="replace") as smaps:
        for line in smaps:
            head = line.split(maxsplit=6)
            if len(head) >= 5 and "-" in head[0] and not line.startswith(("Rss:", "Pss:")):
                path = head[5].strip() if len(head) > 5 else ""
                code = ".so" in path or path.endswith(("/python", "python3")) or "/bin/python" in path
            elif line.startswith("Rss:") and code:
                total += int(line.split()[1])
    return total


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS; whether the kernel did."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return proc_status_kb("VmHWM") <= proc_status_kb("VmRSS") + 1024


class RSSSampler(threading.Thread):
    """Reads VmRSS every ``interval`` seconds and keeps the highest value."""

    def __init__(self, interval: float = 0.005) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.interval = interval
        self.peak_kb = 0
        #: the same for RssAnon: VmRSS less the pages of mapped files (page cache)
        self.anon_peak_kb = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak_kb = max(self.peak_kb, proc_status_kb("VmRSS"))
            self.anon_peak_kb = max(self.anon_peak_kb, proc_status_kb("RssAnon"))
            self._halt.wait(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join(timeout=1.0)
        self.anon_peak_kb = max(self.anon_peak_kb, proc_status_kb("RssAnon"))
        return max(self.peak_kb, proc_status_kb("VmRSS"))


@dataclass
class Peak:
    """What a piece of work added to the process's memory at its peak, in kB."""

    rss_kb: int = 0
    anon_kb: int = 0


class PeakMemory:
    """``with PeakMemory() as peak: work()``: then ``peak`` holds the work's peak increase of RSS
    (VmHWM after a reset, else the sampled VmRSS) and of RssAnon (sampled), over their values
    when the block began."""

    def __enter__(self) -> Peak:
        gc.collect()
        self.peak = Peak()
        self._rss, self._anon = proc_status_kb("VmRSS"), proc_status_kb("RssAnon")
        self._hwm = reset_peak()
        self._sampler = RSSSampler()
        self._sampler.start()
        return self.peak

    def __exit__(self, *exc: object) -> None:
        sampled = self._sampler.stop()
        top = max(proc_status_kb("VmHWM"), sampled) if self._hwm else sampled
        self.peak.rss_kb = top - self._rss
        self.peak.anon_kb = self._sampler.anon_peak_kb - self._anon
