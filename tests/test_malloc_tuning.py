"""keep_message_buffers: glibc's thresholds set once, for the largest message size asked."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux's")
def test_message_buffers_are_reused_once_set():
    # in a fresh process: the thresholds are process-wide. A thread that takes 2 MiB messages
    # in bursts of 8 and frees each burst faults in fresh pages for them under glibc's
    # defaults (the heap's free top is trimmed), and reuses them once the thresholds are set.
    code = textwrap.dedent(
        """
        import resource, sys, threading
        from accord.transport import malloc_tuning

        def faults():
            def work():
                before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
                for _ in range(20):
                    held = [bytes(2 << 20) for _ in range(8)]
                    del held
                counts.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
            counts = []
            thread = threading.Thread(target=work)
            thread.start()
            thread.join()
            return counts[0]

        plain = faults()
        assert malloc_tuning.keep_message_buffers(2 << 20)
        assert malloc_tuning.keep_message_buffers(1 << 20)  # below what is set: nothing to do
        print(plain, faults())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    plain, tuned = int(out[0]), int(out[1])
    assert tuned * 4 < plain, (plain, tuned)  # measured: ~40,000 and ~4,000
