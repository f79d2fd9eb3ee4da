"""Keep the aggregator's resident memory close to what it really holds."""

from __future__ import annotations

from accord.transport.heap import glibc_mallopt, keep_message_pages, message_thresholds

_M_ARENA_MAX = -8


def limit_malloc_arenas(chunk_bytes: int, arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (call before server threads start).

    glibc gives each gRPC worker thread a heap of its own, and freed message buffers stay
    resident there; with many threads that alone added ~1.5x the model size to the
    aggregator's peak RSS (bench/fedavg_memory.py). Returns whether the cap was set
    (False where the C library is not glibc).

    It also fixes glibc's thresholds for messages of ``chunk_bytes``
    (``transport/heap.message_thresholds``, before the server's own, wider, call): blocks
    larger than a message (a model's tensors) are mapped and unmapped on their own. Left to
    the server's thresholds (32 MiB), or to glibc's tuning (it rises to the largest block
    freed), they come from, and stay resident in, the heaps: with 32 sites uploading a 32 MB
    model the aggregator's peak was 3.01-3.05x the model above its baseline with the 32 MiB
    threshold, 2.57-2.82x with these (bench/fedavg_memory.py --light).
    """
    mallopt = glibc_mallopt()
    if mallopt is None:
        return False
    capped = bool(mallopt(_M_ARENA_MAX, arenas))
    return keep_message_pages(message_thresholds(chunk_bytes)) and capped
