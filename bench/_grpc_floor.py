"""Bare gRPC, no Accord code on the path: the floor under ``send_result`` (bench/wire_throughput.py).

One stream-unary method that reads a stream of bytes messages, discards them and answers
their total length as text, served over the federation's mutual TLS (the aggregator's
certificate and key, client certificates required and verified against its CA chain:
``ServerTLS.credentials``) with the aggregator's own server options (``grpc_server.server_options``: Accord's channel
options, BDP probing off), by
``grpc.aio.server`` (``aio``, as the aggregator serves) or by ``grpc.server`` on a thread pool
(``sync``). The sender is a sync ``grpc.secure_channel`` with a collaborator's certificate
(``ClientTLS.credentials``), as a site's client is; no protobuf, no Accord message, no file.
A bench script imports this module as ``from _grpc_floor import ...`` (its own folder is on
``sys.path``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from accord.pki.layout import CertLayout
from accord.transport import wire
from accord.transport.admission import CallLimits
from accord.transport.grpc_server import server_options
from accord.transport.tls import ClientTLS, ServerTLS

#: the servers' modes
MODES = ("aio", "sync")
#: the one method served: a stream of bytes messages in, their total length (ASCII) out
METHOD = "/bench.Floor/Upload"
#: calls a server takes before it stops: the sender's warm-up, then the timed upload
CALLS = 2


def _handlers(handler: Any) -> grpc.GenericRpcHandler:
    service, name = METHOD.strip("/").split("/")
    return grpc.method_handlers_generic_handler(service, {name: grpc.stream_unary_rpc_method_handler(handler)})


def _report(cpu: float) -> None:
    """The timed call's line: this process's CPU seconds (all its threads) while it ran."""
    print(f"BARECPU s={cpu:.4f}", flush=True)


def serve_floor(mode: str, cert_dir: Path, fqdn: str, chunk_bytes: int) -> int:
    """Serve METHOD on ``fqdn``:0 in ``mode`` for CALLS calls, printing ``PORT port=N`` first and
    ``BARECPU`` after the last; returns 0 once they are answered and the server stopped."""
    layout = CertLayout(cert_dir)
    credentials = ServerTLS(layout.aggregator_cert(fqdn), layout.aggregator_key(fqdn), layout.chain).credentials()
    options = server_options(chunk_bytes, CallLimits().max_concurrent_calls)  # the aggregator's own (BDP probing off)
    if mode == "aio":
        return asyncio.run(_serve_aio(f"{fqdn}:0", credentials, options))
    if mode == "sync":
        return _serve_sync(f"{fqdn}:0", credentials, options)
    raise ValueError(f"bare gRPC mode {mode!r} is not one of {', '.join(MODES)}")


async def _serve_aio(address: str, credentials: grpc.ServerCredentials, options: list[tuple[str, Any]]) -> int:
    calls, done = 0, asyncio.Event()

    async def upload(requests: Any, context: Any) -> bytes:
        nonlocal calls
        started, total = time.process_time(), 0
        async for message in requests:
            total += len(message)
        calls += 1
        if calls == CALLS:
            _report(time.process_time() - started)
            done.set()
        return str(total).encode()

    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((_handlers(upload),))
    port = server.add_secure_port(address, credentials)
    await server.start()
    print(f"PORT port={port}", flush=True)
    await done.wait()
    await server.stop(5.0)
    return 0


def _serve_sync(address: str, credentials: grpc.ServerCredentials, options: list[tuple[str, Any]]) -> int:
    calls, lock, done = 0, threading.Lock(), threading.Event()

    def upload(requests: Iterator[bytes], context: Any) -> bytes:
        nonlocal calls
        started, total = time.process_time(), 0
        for message in requests:
            total += len(message)
        with lock:
            calls += 1
            if calls == CALLS:
                _report(time.process_time() - started)
                done.set()
        return str(total).encode()

    with futures.ThreadPoolExecutor(max_workers=4) as pool:
        server = grpc.server(pool, options=options)
        server.add_generic_rpc_handlers((_handlers(upload),))
        port = server.add_secure_port(address, credentials)
        server.start()
        print(f"PORT port={port}", flush=True)
        done.wait()
        server.stop(5.0).wait()
    return 0


def send_floor(cert_dir: Path, name: str, fqdn: str, port: int, payload: memoryview, chunk_bytes: int) -> tuple[float, float]:
    """Seconds to stream ``payload`` to a floor server as messages of ``chunk_bytes`` (each a copy
    of its slice, as a site's client serializes each chunk), from the call to the answer, and
    this process's CPU seconds meanwhile; one warm-up call first, so the handshake is not timed."""
    layout = CertLayout(cert_dir)
    credentials = ClientTLS(layout.collaborator_cert(name), layout.collaborator_key(name), layout.chain).credentials()
    with grpc.secure_channel(f"{fqdn}:{port}", credentials, options=wire.channel_options(chunk_bytes)) as channel:
        upload = channel.stream_unary(METHOD)
        if upload(iter([b"warm-up"])) != b"7":
            raise RuntimeError("the bare gRPC server answered the warm-up call wrongly")
        messages = (bytes(payload[at : at + chunk_bytes]) for at in range(0, len(payload), chunk_bytes))
        cpu, started = time.process_time(), time.perf_counter()
        answer = upload(messages)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    if answer != str(len(payload)).encode():
        raise RuntimeError(f"the bare gRPC server counted {answer!r} bytes of {len(payload)}")
    return seconds, cpu
