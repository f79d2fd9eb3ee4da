"""A collaborator's client keeps trying an unreachable aggregator, with backoff, saying so once an outage, then gives up clearly."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from test_transport import MEMBERS, PLAN, FakeService, Federation, a_result, pki, small_model  # noqa: F401  (pki is a fixture)

from accord.errors import AccordError
from accord.experiment.local import free_port
from accord.messages import Action
from accord.transport import grpc_client
from accord.transport.grpc_client import GrpcAggregatorClient
from accord.transport.grpc_server import GrpcAggregatorServer


@contextmanager
def late_server(pki, delay: float) -> Iterator[int]:
    """A port whose aggregator (a fake service with a round open) starts listening after ``delay`` s."""
    port = free_port()
    service = FakeService(small_model())
    service.open_round()
    server = GrpcAggregatorServer(service, "127.0.0.1", port, pki["server"])
    starter = threading.Timer(delay, server.start)
    starter.start()
    try:
        yield port
    finally:
        starter.join()
        server.stop(0)


def test_calls_wait_for_an_aggregator_that_comes_up_late(pki, monkeypatch, caplog) -> None:
    pauses: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(grpc_client.time, "sleep", lambda s: (pauses.append(s), real_sleep(s)))
    with late_server(pki, 2.0) as port:
        with GrpcAggregatorClient(MEMBERS[0], PLAN, "localhost", port, pki[MEMBERS[0]], reconnect_timeout=60) as client:
            assert client.get_tasks().action is Action.RUN
    assert len(pauses) >= 2 and all(0 < p <= grpc_client.BACKOFF_MAX for p in pauses)
    assert pauses[0] <= grpc_client.BACKOFF_FIRST <= pauses[1]  # it doubles, jittered within [p/2, p]
    assert "unreachable" in caplog.text and "trying again" in caplog.text


def test_an_aggregator_that_never_comes_gives_a_clear_error(pki) -> None:
    client = GrpcAggregatorClient(MEMBERS[0], PLAN, "localhost", free_port(), pki[MEMBERS[0]], reconnect_timeout=1.5)
    with pytest.raises(AccordError, match="is unreachable") as failed:
        client.get_tasks()
    client.close()
    assert "check that the aggregator is running" in failed.value.fix


@pytest.mark.parametrize("refuse", [False, True])
def test_after_an_outage_the_aggregators_certificate_is_checked_again(pki, refuse: bool) -> None:
    from cryptography import x509

    from accord.errors import PKIError
    from accord.pki import load_pem_cert

    seen: list[int] = []

    def check(der: bytes) -> None:
        seen.append(x509.load_der_x509_certificate(der).serial_number)
        if refuse:
            raise PKIError("the aggregator's certificate is revoked")

    with late_server(pki, 1.5) as port, GrpcAggregatorClient(
        MEMBERS[0], PLAN, "localhost", port, pki[MEMBERS[0]], reconnect_timeout=60, check_server=check
    ) as client:
        if refuse:
            with pytest.raises(PKIError, match="revoked"):
                client.get_tasks()
        else:
            assert client.get_tasks().action is Action.RUN
    assert seen and set(seen) == {load_pem_cert(pki["server"].cert_path).serial_number}


def test_a_site_started_long_before_its_aggregator_joins_once_it_listens(pki) -> None:
    """gRPC's own reconnect backoff grows to 120 s: a site waiting 30 s for its aggregator would try
    next only ~43 s (+-20%) after it started, past this connect timeout; Accord caps it at 5 s."""
    with late_server(pki, 30.0) as port:
        with GrpcAggregatorClient(MEMBERS[0], PLAN, "localhost", port, pki[MEMBERS[0]], connect_timeout=40) as client:
            assert client.join().plan_hash == PLAN


def test_a_site_says_once_that_it_waits_for_a_late_aggregator(pki, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="accord.transport")
    with late_server(pki, 3.0) as port:
        with GrpcAggregatorClient(MEMBERS[0], PLAN, "localhost", port, pki[MEMBERS[0]], connect_timeout=60) as client:
            client.join()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"waiting for the aggregator at localhost:{port} (up to 60 s)"]
    assert f"the aggregator at localhost:{port} answers" in caplog.text


def test_retries_of_one_outage_say_so_once(pki, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="accord.transport")
    with late_server(pki, 3.0) as port:
        with GrpcAggregatorClient(MEMBERS[0], PLAN, "localhost", port, pki[MEMBERS[0]], reconnect_timeout=60) as client:
            client.get_tasks()
    tries = [r for r in caplog.records if "trying again in" in r.getMessage()]
    assert len(tries) >= 2  # the first at WARNING, the rest at DEBUG
    assert [r.levelno for r in tries] == [logging.WARNING] + [logging.DEBUG] * (len(tries) - 1)
    assert f"waiting for the aggregator at localhost:{port}: it is unreachable" in tries[0].getMessage()
    assert f"the task request: the aggregator at localhost:{port} answers again" in caplog.text


@pytest.mark.parametrize(("chunk_bytes", "reconnects"), [(4096, True), (1 << 20, False)])
def test_a_result_of_more_than_one_chunk_is_followed_by_a_new_connection_checked_again(pki, chunk_bytes: int, reconnects: bool) -> None:
    """gRPC keeps about a message's worth of buffers for each connection that carried an upload:
    the site opens a new one after a result larger than one chunk (the small model is 8 KiB),
    and checks the aggregator's certificate on it as after an outage; a one-chunk result keeps
    its connection."""
    from cryptography import x509

    from accord.pki import load_pem_cert

    seen: list[int] = []
    federation = Federation(pki, small_model(), chunk_bytes=chunk_bytes)
    try:
        client = federation.client("col1", chunk_bytes=chunk_bytes, check_server=lambda der: seen.append(x509.load_der_x509_certificate(der).serial_number))
        client.join()
        model = client.get_model(2)
        assert len(seen) == 1
        client.send_result(a_result(model))
        client.send_result(a_result(model, task="aggregated_model_validation", tensors=None, is_delta=False))  # on the new connection
        np.testing.assert_array_equal(client.get_model(2)["dense.weight"], model["dense.weight"])
        assert len(seen) == (2 if reconnects else 1)
        assert set(seen) == {load_pem_cert(pki["server"].cert_path).serial_number}
        assert [got.task for got, _ in federation.service.submissions] == ["train", "aggregated_model_validation"]
    finally:
        federation.close()
