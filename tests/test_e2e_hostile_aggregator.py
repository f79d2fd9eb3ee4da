"""A hostile aggregator (the CA's own aggregator certificate, so the site trusts it) declares a
tensor far larger than the site's model: the site refuses it before allocating anything."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from conftest import FAST

from accord.experiment.local import fx_command, prepare_workspace
from accord.pki.layout import CertLayout
from accord.tensors.state import load_state
from accord.transport import wire
from accord.transport.grpc_server import SERVICE
from accord.transport.proto import accord_pb2 as pb
from accord.transport.tls import ServerTLS

pytestmark = pytest.mark.e2e

#: what the hostile model declares: 32768 x 32768 float32 = 4 GiB, under the client's 64 GiB cap
HUGE = [1 << 15, 1 << 15]
#: what it streams if the site keeps reading: 1 GiB, in chunks under the message limit
CHUNK = b"\0" * (512 * 1024)
CHUNKS = 2048


class HostileAggregator:
    """Answers Join and GetTasks as an aggregator would, then serves a model with a huge tensor."""

    def __init__(self, tensor: str) -> None:
        self.tensor = tensor
        self.chunks_sent = 0

    def join(self, request: pb.JoinRequest, context: grpc.ServicerContext) -> pb.JoinResponse:
        response = pb.JoinResponse(plan_hash=request.header.plan_hash, rounds_to_train=1, round_number=0)
        response.workspace_hash = request.header.workspace_hash  # whatever the site expects
        return response

    def get_tasks(self, request: pb.TasksRequest, context: grpc.ServicerContext) -> pb.TasksResponse:
        task = pb.TaskSpec(name="aggregated_model_validation", function="validate", kwargs_json='{"apply": "global"}')
        return pb.TasksResponse(action=pb.TasksResponse.RUN, round_number=0, tasks=[task])

    def get_model(self, request: pb.ModelRequest, context: grpc.ServicerContext):
        for index in range(CHUNKS):
            if not context.is_active():
                return
            self.chunks_sent += 1
            yield pb.TensorChunk(name=self.tensor, dtype="float32", shape=HUGE, offset=index * len(CHUNK), data=CHUNK)

    def serve(self, tls: ServerTLS, port: int) -> grpc.Server:
        server = grpc.server(ThreadPoolExecutor(max_workers=4), options=wire.channel_options(wire.DEFAULT_CHUNK_BYTES))
        handlers = {
            "Join": grpc.unary_unary_rpc_method_handler(self.join, pb.JoinRequest.FromString, pb.JoinResponse.SerializeToString),
            "GetTasks": grpc.unary_unary_rpc_method_handler(self.get_tasks, pb.TasksRequest.FromString, pb.TasksResponse.SerializeToString),
            "GetModel": grpc.unary_stream_rpc_method_handler(self.get_model, pb.ModelRequest.FromString, pb.TensorChunk.SerializeToString),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        assert server.add_secure_port(f"localhost:{port}", tls.credentials())
        server.start()
        return server


def peak_rss_mib(process: subprocess.Popen, timeout: float = 180) -> tuple[int, float]:
    """Wait for ``process``; its exit code and the peak resident memory it reached (MiB), from
    its VmHWM sampled every 20 ms (wait4's ru_maxrss would count this test process's memory,
    which the child shares at fork)."""
    deadline = time.monotonic() + timeout
    peak_kib = 0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            status = ""
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak_kib = max(peak_kib, int(line.split()[1]))
        if time.monotonic() > deadline:
            process.kill()
        time.sleep(0.02)
    return process.returncode, peak_kib / 1024


def test_a_declared_tensor_larger_than_the_sites_model_is_refused_before_allocation(tmp_path: Path) -> None:
    plan = prepare_workspace(tmp_path / "ws", collaborators=1, rounds=1, overrides=FAST)
    net = plan.model.network.settings
    layout = CertLayout(plan.resolve_path(net.cert_dir))
    tls = ServerTLS(layout.aggregator_cert(net.agg_addr), layout.aggregator_key(net.agg_addr), layout.chain)
    model = load_state(plan.resolve_path(plan.model.aggregator.settings.init_state_path))
    name, own = next((n, t) for n, t in model.items() if t.ndim == 2)
    hostile = HostileAggregator(name)
    server = hostile.serve(tls, net.agg_port)
    try:
        site = subprocess.Popen(
            fx_command("collaborator", "start", "-n", "collaborator1", "-w", str(plan.workspace)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        code, peak = peak_rss_mib(site)
        out = site.stdout.read()
    finally:
        server.stop(0)
    assert code == 2, out
    shape = ", ".join(str(d) for d in own.shape)
    assert f"sent a model that is not this site's model: tensor {name!r} is float32[32768, 32768], expected float32[{shape}]" in out
    assert "Traceback" not in out
    # refused at the first chunk: nothing like the 4 GiB declared (nor the 1 GiB streamed) was taken
    assert peak < 1024, f"the site reached {peak:.0f} MiB"
    assert hostile.chunks_sent < CHUNKS
