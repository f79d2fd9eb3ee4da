"""send_result and get_model through the real aggregator, against a raw TLS socket and bare gRPC, in one run.

    .venv/bin/python bench/wire_throughput.py [--size-mb 200] [--repeats 3]

Every figure is MB/s (10^6 bytes) of one model's bytes on loopback, over mutual TLS with the
federation's own certificates, between separate processes, interleaved round by round:

- ``raw TLS``: the baseline. A Python ``ssl`` sender (the collaborator's certificate) writes
  the model's bytes to a receiver (the aggregator's certificate, client certificates
  required) that reads them into a preallocated buffer and answers one byte; timed from
  the end of the handshake to that byte.
- ``send_result``: collaborator c1 uploads its update (the model plus an offset) through
  ``GrpcAggregatorClient.send_result`` to ``accord.aggregator.serve.start_aggregator``,
  until the acknowledgement: the aggregator has written it to its staged file while it
  arrived, flushed that file to disk, checked it and taken it into FedAvg. c1's result
  does not close the round (c2's does, after it), so the round's close is not in it.
- ``send_result, transfer``: the same upload without the aggregator's submit (the time the
  aggregator's ``AggregatorRuntime.submit`` took, from the last chunk in its file to the
  acknowledgement, taken off): what the transport and the receive path reach on their own.
- ``send_result (closing)``: c2's upload, which closes the round: the close (the new
  model, its files) is in its time.
- ``get_model``: c1 fetching the round's global model (``GrpcAggregatorClient.get_model``),
  alone on the wire.
- ``bare gRPC aio`` and ``bare gRPC sync``: what gRPC itself reaches, no Accord code on the
  path (bench/_grpc_floor.py): a server (``grpc.aio.server``, as the aggregator serves, or
  ``grpc.server`` on a thread pool) with the aggregator's certificate, client certificates
  required, Accord's channel options, and one stream-unary method that reads bytes messages
  and discards them; a sync ``grpc.secure_channel`` with c1's certificate streams the model's
  bytes to it as messages of the plan's ``chunk_bytes``, timed from the call to the answer,
  after one warm-up call on the channel (the handshake is not timed).

It prints min and median over ``--repeats`` rounds of each, and the ratios of the medians
(and of the minima) to raw TLS; then send_result's and its transfer's ratios to bare gRPC aio
(the floor Accord's transport stands on). Then the CPU each end spent per GB
(``time.process_time`` of each process, all its threads), medians and minima: a loaded
machine slows every figure above but hardly changes these: the raw TLS receiver and sender;
each bare gRPC server (during the timed call) and its client; c1's upload at the aggregator
(from the header's check, ``expect``, to the end of its submit) and the submit's share; c1's
process for its send_result and for its get_model. ``--raw-recv``, ``--bare-grpc``, ``--serve``
and ``--client`` are the modes the script starts itself in.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _grpc_floor import MODES, send_floor, serve_floor
from fedavg_memory import MB, Federation, make_federation, offset, plan_file, weight

# -- the raw TLS baseline -------------------------------------------------------------------------


def raw_receive(cert_dir: Path, fqdn: str, nbytes: int) -> int:
    """Accept one mutual-TLS connection, read ``nbytes`` into a buffer, answer one byte; print the port first."""
    from accord.pki.layout import CertLayout

    layout = CertLayout(cert_dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(layout.aggregator_cert(fqdn), layout.aggregator_key(fqdn))
    context.load_verify_locations(layout.chain)
    context.verify_mode = ssl.CERT_REQUIRED
    buffer = memoryview(bytearray(nbytes))
    with socket.create_server(("127.0.0.1", 0)) as server:
        print(f"PORT port={server.getsockname()[1]}", flush=True)
        connection, _ = server.accept()
        started = time.process_time()
        with context.wrap_socket(connection, server_side=True) as tls:
            got = 0
            while got < nbytes:
                got += tls.recv_into(buffer[got:], min(nbytes - got, 1 << 24))
            tls.sendall(b"k")
    print(f"RAWCPU s={time.process_time() - started:.4f}", flush=True)
    return 0


def raw_send(cert_dir: Path, name: str, port: int, payload: memoryview) -> tuple[float, float]:
    """Seconds to send ``payload`` over a fresh mutual-TLS connection, from the handshake's end to
    the answer, and this process's CPU seconds from the handshake's start."""
    from accord.pki.layout import CertLayout

    layout = CertLayout(cert_dir)
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(layout.chain))
    context.load_cert_chain(layout.collaborator_cert(name), layout.collaborator_key(name))
    context.check_hostname = False
    cpu = time.process_time()
    with socket.create_connection(("127.0.0.1", port)) as connection, context.wrap_socket(connection) as tls:
        tls.do_handshake()
        started = time.perf_counter()
        tls.sendall(payload)
        if tls.recv(1) != b"k":
            raise RuntimeError("the raw TLS receiver did not answer")
        return time.perf_counter() - started, time.process_time() - cpu


# -- the federation's children ------------------------------------------------------------------


def serve(workspace: Path) -> int:
    import logging

    from accord.aggregator.runtime import AggregatorRuntime
    from accord.aggregator.serve import start_aggregator
    from accord.plan.loader import load_plan

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="aggregator %(levelname)s %(name)s: %(message)s")
    plan = load_plan(plan_file(workspace), workspace=workspace)
    real_submit, real_expect = AggregatorRuntime.submit, AggregatorRuntime.expect

    def timed_expect(runtime: AggregatorRuntime, collaborator: str, *args) -> None:
        print(f"EXPECT name={collaborator} cpu={time.process_time():.4f}", flush=True)
        real_expect(runtime, collaborator, *args)

    def timed_submit(runtime: AggregatorRuntime, result, plan_hash: str) -> None:
        started, cpu = time.perf_counter(), time.process_time()
        real_submit(runtime, result, plan_hash)
        now = time.process_time()
        print(
            f"SUBMIT name={result.collaborator} s={time.perf_counter() - started:.4f} cpu={now:.4f} submit_cpu={now - cpu:.4f}",
            flush=True,
        )

    AggregatorRuntime.submit = timed_submit  # type: ignore[method-assign]
    AggregatorRuntime.expect = timed_expect  # type: ignore[method-assign]
    runtime = start_aggregator(plan, quit_grace=15.0)
    return 0 if runtime.finished else 1


def collaborate(workspace: Path, name: str, index: int, timeout: float) -> int:
    """Each round, once told GO on stdin: fetch the model, add the offset, send it; print TIMING."""
    from accord.collaborator.site import grpc_client
    from accord.messages import Action, TaskResult
    from accord.plan.loader import load_plan
    from accord.tensors.digest import model_digest

    plan = load_plan(plan_file(workspace), workspace=workspace)
    deadline = time.monotonic() + timeout
    with grpc_client(plan, name, connect_timeout=60.0) as client:
        client.join()
        print(f"JOINED name={name}", flush=True)
        for line in sys.stdin:
            if line.strip() != "GO":
                break
            assignment = client.get_tasks()
            while assignment.action is Action.WAIT and time.monotonic() < deadline:
                assignment = client.get_tasks()
            if assignment.action is not Action.RUN:
                print(f"ERROR {name}: expected RUN, got {assignment.action.value}", flush=True)
                return 1
            started, cpu = time.perf_counter(), time.process_time()
            model = client.get_model(assignment.round_number)
            get_s, get_cpu = time.perf_counter() - started, time.process_time() - cpu
            digest = model_digest(model, assignment.round_number)
            for key, array in model.items():
                array += offset(index, key)
            result = TaskResult(
                name, assignment.round_number, "train", weight(index), {"loss": 1.0}, tensors=model, model_digest=digest
            )
            started, cpu = time.perf_counter(), time.process_time()
            client.send_result(result)
            send_s, send_cpu = time.perf_counter() - started, time.process_time() - cpu
            del result, model
            print(
                f"TIMING name={name} round={assignment.round_number} get_s={get_s:.4f} send_s={send_s:.4f} "
                f"get_cpu={get_cpu:.4f} send_cpu={send_cpu:.4f}",
                flush=True,
            )
        while time.monotonic() < deadline:
            if client.get_tasks().action is Action.QUIT:
                return 0
    return 1


# -- the parent -------------------------------------------------------------------------------------


def summary(label: str, mbps: list[float], baseline: list[float]) -> str:
    med, low = statistics.median(mbps), min(mbps)
    ratio = f"  = {ratios(mbps, baseline)} raw TLS" if baseline is not mbps else ""
    return f"   {label:24s} min {low:7.0f}  median {med:7.0f} MB/s{ratio}"


def ratios(mbps: list[float], baseline: list[float]) -> str:
    """The ratio of the medians and that of the minima, as printed."""
    return f"{statistics.median(mbps) / statistics.median(baseline):.2f}x (median), {min(mbps) / min(baseline):.2f}x (min)"


def bare_round(
    federation: Federation, label: str, mode: str, cert_dir: Path, payload: memoryview, chunk_bytes: int
) -> tuple[float, float, float]:
    """One timed upload to a fresh bare gRPC server in ``mode``: (seconds, client CPU s, server CPU s)."""
    federation.start(label, "--bare-grpc", mode, str(cert_dir), "localhost", str(chunk_bytes))
    port = int(federation.wait_for("PORT", {label}, timeout=60)[label]["port"])
    seconds, client_cpu = send_floor(cert_dir, "c1", "localhost", port, payload, chunk_bytes)
    server_cpu = float(federation.wait_for("BARECPU", {label}, timeout=60)[label]["s"])
    if federation.wait_exit([label], timeout=60)[label] != 0:
        raise RuntimeError(f"the bare gRPC server {label} did not exit cleanly")
    return seconds, client_cpu, server_cpu


def run(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="accord-wire-"))
    federation: Federation | None = None
    try:
        plan, model_bytes = make_federation(root / "ws", ["c1", "c2"], args.size_mb, rounds=args.repeats)
        workspace = plan.workspace
        cert_dir = plan.resolve_path(plan.model.network.settings.cert_dir)
        payload = memoryview(np.random.default_rng(1).integers(0, 255, model_bytes, dtype=np.uint8))
        print(
            f"model: {model_bytes / MB:.1f} MB, {args.repeats} rounds, mutual TLS on 127.0.0.1, separate processes; "
            f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
            flush=True,
        )
        federation = Federation(workspace, __file__)
        federation.start("aggregator", "--serve", str(workspace))
        for index, name in enumerate(("c1", "c2"), start=1):
            federation.start(name, "--client", str(workspace), name, str(index), "--timeout", str(args.timeout), stdin=True)
        federation.wait_for("JOINED", {"c1", "c2"}, timeout=args.timeout)
        chunk_bytes = plan.model.network.settings.chunk_bytes
        figures: dict[str, list[float]] = {
            "raw TLS": [], "bare gRPC aio": [], "bare gRPC sync": [],
            "send_result": [], "send_result, transfer": [], "send_result (closing)": [], "get_model": [],
        }
        submits: list[float] = []
        cpu: dict[str, list[float]] = {
            "raw TLS receiver": [], "raw TLS sender": [],
            **{f"bare gRPC {mode} {end}": [] for mode in MODES for end in ("server", "client")},
            "send_result at the aggregator": [], "  of which its submit": [], "send_result at the site": [], "get_model at the site": [],
        }
        per_gb = 1e9 / model_bytes
        for round_number in range(args.repeats):
            label = f"raw{round_number}"
            federation.start(label, "--raw-recv", str(cert_dir), "localhost", str(model_bytes))
            port = int(federation.wait_for("PORT", {label}, timeout=60)[label]["port"])
            seconds, sender_cpu = raw_send(cert_dir, "c1", port, payload)
            figures["raw TLS"].append(model_bytes / MB / seconds)
            cpu["raw TLS sender"].append(sender_cpu * per_gb)
            cpu["raw TLS receiver"].append(float(federation.wait_for("RAWCPU", {label}, timeout=60)[label]["s"]) * per_gb)
            for mode in MODES:
                label = f"bare-{mode}{round_number}"
                seconds, client_cpu, server_cpu = bare_round(federation, label, mode, cert_dir, payload, chunk_bytes)
                figures[f"bare gRPC {mode}"].append(model_bytes / MB / seconds)
                cpu[f"bare gRPC {mode} server"].append(server_cpu * per_gb)
                cpu[f"bare gRPC {mode} client"].append(client_cpu * per_gb)
            for name in ("c1", "c2"):  # one after the other: each alone on the wire
                mark = len(federation.seen)
                federation.tell(name, "GO")
                timing = federation.wait_for("TIMING", {name}, timeout=args.timeout, since=mark)[name]
                if name == "c1":
                    figures["get_model"].append(model_bytes / MB / float(timing["get_s"]))
                    figures["send_result"].append(model_bytes / MB / float(timing["send_s"]))
                    submit = federation.wait_for("SUBMIT", {"aggregator"}, timeout=60, since=mark)["aggregator"]
                    expect = federation.wait_for("EXPECT", {"aggregator"}, timeout=60, since=mark)["aggregator"]
                    submits.append(float(submit["s"]) / float(timing["send_s"]))
                    cpu["send_result at the aggregator"].append((float(submit["cpu"]) - float(expect["cpu"])) * per_gb)
                    cpu["  of which its submit"].append(float(submit["submit_cpu"]) * per_gb)
                    cpu["send_result at the site"].append(float(timing["send_cpu"]) * per_gb)
                    cpu["get_model at the site"].append(float(timing["get_cpu"]) * per_gb)
                    figures["send_result, transfer"].append(model_bytes / MB / (float(timing["send_s"]) - float(submit["s"])))
                else:
                    figures["send_result (closing)"].append(model_bytes / MB / float(timing["send_s"]))
        for name in ("c1", "c2"):
            federation.tell(name, "END")
        codes = federation.wait_exit(["aggregator", "c1", "c2"], timeout=120)
    except BaseException as exc:
        print(f"FAILED: {exc}", flush=True)
        if federation is not None:
            for label, child in federation.children.items():
                if tail := child.stderr_tail():
                    print(f"--- {label} stderr (tail) ---\n{tail}", flush=True)
        return 1
    finally:
        if federation is not None:
            federation.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    baseline = figures["raw TLS"]
    print()
    for label, mbps in figures.items():
        print(summary(label, mbps, baseline))
    floor = figures["bare gRPC aio"]
    print(
        f"   against bare gRPC aio (the floor): send_result {ratios(figures['send_result'], floor)}; "
        f"its transfer {ratios(figures['send_result, transfer'], floor)}"
    )
    print(
        f"   (of c1's send_result, the aggregator's submit, once the last chunk is in its file: flush to disk, "
        f"checks, FedAvg's norms: median {statistics.median(submits):.0%})"
    )
    print("   CPU seconds per GB (median, min):")
    for label, seconds in cpu.items():
        print(f"     {label:32s} {statistics.median(seconds):6.2f}  {min(seconds):6.2f}")
    print(f"   load average at the end: {os.getloadavg()[0]:.2f} (1 min); other work on the machine slows every figure")
    clean = all(code == 0 for code in codes.values())
    print(f"   every process exited cleanly: {'OK' if clean else 'FAILED'}")
    return 0 if clean else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=200.0, help="model size in MB (10^6 bytes)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, each measuring every figure once")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds any one phase may take")
    parser.add_argument("--serve", metavar="WS", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=3, metavar=("WS", "NAME", "INDEX"), help=argparse.SUPPRESS)
    parser.add_argument("--raw-recv", nargs=3, metavar=("CERTS", "FQDN", "BYTES"), help=argparse.SUPPRESS)
    parser.add_argument("--bare-grpc", nargs=4, metavar=("MODE", "CERTS", "FQDN", "CHUNK_BYTES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        sys.exit(serve(args.serve))
    if args.client is not None:
        workspace, name, index = args.client
        sys.exit(collaborate(Path(workspace), name, int(index), args.timeout))
    if args.raw_recv is not None:
        certs, fqdn, nbytes = args.raw_recv
        sys.exit(raw_receive(Path(certs), fqdn, int(nbytes)))
    if args.bare_grpc is not None:
        mode, certs, fqdn, chunk = args.bare_grpc
        sys.exit(serve_floor(mode, Path(certs), fqdn, int(chunk)))
    sys.exit(run(args))


if __name__ == "__main__":
    main()
