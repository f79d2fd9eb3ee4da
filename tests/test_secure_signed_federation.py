"""Signed secure aggregation in a whole federation in one process: the real runtime verifying
with the federation's certificates (aggregator/serve.site_verifier), real Collaborators signing
with their own keys (collaborator/secure_site.site_signing), the in-process transport. The
signed phases over gRPC and real processes: tests/test_e2e_secagg.py."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
from test_secure_site import ScriptedAggregator

from accord.aggregator.runtime import AggregatorRuntime
from accord.aggregator.serve import site_verifier
from accord.collaborator.secure_site import site_signing
from accord.collaborator.site import build_collaborator
from accord.messages import Action, Task, TaskAssignment
from accord.pki.ca import certify, make_federation_pki
from accord.pki.keys import load_pem_cert, load_private_key
from accord.pki.layout import CertLayout
from accord.pki.signatures import signer_for
from accord.secagg import crypto
from accord.secagg.messages import Advert, SignedAdvert, encode_signed_advert
from accord.secagg.signing import Signing, advert_statement
from accord.strategies.secure_phases import encode_entries, encode_opening
from accord.tensors.state import load_state
from accord.transport.inprocess import InProcessClient
from accord.workspace.initialize import initialize_model

NAMES = ["collaborator1", "collaborator2", "collaborator3", "collaborator4"]
SECURE = {
    "aggregator.settings.secure_aggregation": {"enabled": True, "clip": 10.0},
    "aggregator.settings.final_validation": False,
    "collaborator.settings.opt_treatment": "RESET",
}


def signed_federation(workspace_factory, overrides=None, key_type="ec"):
    plan = workspace_factory(NAMES, rounds=1, overrides={**SECURE, **(overrides or {})})
    cert_dir = Path(plan.resolve_path(plan.model.network.settings.cert_dir))
    make_federation_pki(cert_dir, "localhost", NAMES, key_type)
    initialize_model(plan)
    return plan, CertLayout(cert_dir)


def run(plan, layout: CertLayout, signings: dict[str, Signing]) -> tuple[AggregatorRuntime, dict[str, BaseException]]:
    runtime = AggregatorRuntime(plan, verify_sites=site_verifier(layout))
    errors: dict[str, BaseException] = {}

    def work(name: str) -> None:
        try:
            build_collaborator(plan, name, InProcessClient(runtime, name, plan.hash, 2.0), signings[name]).run()
        except BaseException as exc:  # the test looks at them
            errors[name] = exc

    threads = [threading.Thread(target=work, args=(name,), daemon=True) for name in NAMES]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    assert not any(thread.is_alive() for thread in threads)
    runtime.close()  # the committer has written the round's files
    return runtime, errors


def test_a_signed_secure_round_runs_the_consistency_check_and_trains(workspace_factory, caplog) -> None:
    plan, layout = signed_federation(workspace_factory)
    with caplog.at_level(logging.INFO):
        runtime, errors = run(plan, layout, {name: site_signing(layout.cert_dir, name) for name in NAMES})
    assert not errors, errors
    assert runtime.finished
    for phase in ("share", "mask", "confirm", "unmask"):
        assert f"round 0: phase {phase} opened for 4 sites" in caplog.text
    assert "revealed shares for 4 survivors and 0 dropped sites" in caplog.text
    settings = plan.model.aggregator.settings
    last, init = load_state(plan.resolve_path(settings.last_state_path)), load_state(plan.resolve_path(settings.init_state_path))
    assert any(not np.array_equal(last[name], init[name]) for name in init)


def test_a_p384_federation_with_a_site_on_a_new_p256_key_runs_a_signed_round(workspace_factory, caplog) -> None:
    """A federation whose keys were all made P-384 (before P-256 became the default) signs and
    verifies its round as before, with collaborator4 re-enrolled on a new default (P-256) key."""
    plan, layout = signed_federation(workspace_factory, key_type="ec-p384")
    certify(layout.cert_dir, "collaborator", "collaborator4", overwrite=True)
    curves = {name: load_pem_cert(layout.collaborator_cert(name)).public_key().curve.name for name in NAMES}
    assert curves == {**dict.fromkeys(NAMES[:3], "secp384r1"), "collaborator4": "secp256r1"}
    assert load_pem_cert(layout.signing_cert).public_key().curve.name == "secp384r1"
    with caplog.at_level(logging.INFO):
        runtime, errors = run(plan, layout, {name: site_signing(layout.cert_dir, name) for name in NAMES})
    assert not errors, errors
    assert runtime.finished
    assert "round 0: phase confirm opened for 4 sites" in caplog.text
    assert "revealed shares for 4 survivors and 0 dropped sites" in caplog.text


def test_a_site_signing_under_another_sites_certificate_is_refused_and_the_round_goes_on(workspace_factory, caplog) -> None:
    """collaborator4 signs its advert with collaborator3's key and certificate: the aggregator
    refuses it (and logs why), collaborator4 is told, and the round closes with the other three."""
    cutoff = {"straggler_handling_policy.settings": {"policy": "cutoff_time", "cutoff_seconds": 5.0, "min_reports": 3}}
    plan, layout = signed_federation(workspace_factory, cutoff)
    signings = {name: site_signing(layout.cert_dir, name) for name in NAMES}
    signings["collaborator4"] = site_signing(layout.cert_dir, "collaborator3")
    with caplog.at_level(logging.INFO):
        runtime, errors = run(plan, layout, signings)
    assert set(errors) == {"collaborator4"}, errors
    told = str(errors["collaborator4"])
    assert "the advert of 'collaborator4' is not signed by a valid certificate of 'collaborator4'" in told, told
    assert "refused result from collaborator4: the advert of 'collaborator4' is not signed" in caplog.text
    assert "its certificate names 'collaborator3'" in caplog.text  # the verifier's reason
    assert runtime.finished
    assert "round 0: phase confirm opened for 3 sites" in caplog.text
    assert "revealed shares for 3 survivors and 0 dropped sites" in caplog.text


def test_a_signing_site_refuses_a_roster_with_the_aggregators_keys_for_a_neighbour(workspace_factory, caplog) -> None:
    """A hostile aggregator puts X25519 keys of its own in collaborator2's place in the roster,
    signed with the aggregator's own (valid) certificate: collaborator1 refuses to share, logs
    why and tells the aggregator; no share leaves the site."""
    plan, layout = signed_federation(workspace_factory)
    seed, names = bytes(range(32)), NAMES[:3]
    opening = encode_opening(seed, names)
    mitm = Advert(crypto.public_bytes(crypto.X25519PrivateKey.generate()), crypto.public_bytes(crypto.X25519PrivateKey.generate()))
    agg_cert, agg_key, _ = layout.leaf_paths("aggregator", "localhost")
    forged = encode_signed_advert(
        SignedAdvert(mitm, agg_cert.read_bytes(), signer_for(load_private_key(agg_key))(advert_statement(seed, "collaborator2", mitm)))
    )

    def script(sent):
        if not sent:
            return TaskAssignment(Action.RUN, 0, (Task("advertise", "phase"),), phase="advertise", payload=opening)
        if len(sent) == 1:
            roster = {"collaborator1": sent[0].payload, "collaborator2": forged, "collaborator3": forged}  # both neighbours
            return TaskAssignment(Action.RUN, 0, (Task("share", "phase"),), phase="share", payload=encode_entries(roster, names))
        return TaskAssignment(Action.QUIT, 1)

    model = load_state(plan.resolve_path(plan.model.aggregator.settings.init_state_path))
    client = ScriptedAggregator(model, script)
    collaborator = build_collaborator(plan, "collaborator1", client, site_signing(layout.cert_dir, "collaborator1"))
    with caplog.at_level(logging.WARNING):
        collaborator.run()  # it refuses the roster, tells the aggregator, and serves on (to QUIT)
    refusal = client.sent[-1]
    assert refusal.phase == "share" and refusal.failure.startswith("refused by the site: "), refusal
    assert "is not signed by a valid certificate of 'collaborator" in refusal.failure
    assert not refusal.payload  # no share left the site
    assert "its certificate names 'localhost'" in caplog.text  # the verifier's reason: the aggregator's certificate
    assert "is not signed by a valid certificate" in caplog.text  # the site logs the refusal
