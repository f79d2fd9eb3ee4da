"""The site's side of secure aggregation through the real Collaborator (collaborator/secure_site.py):
a scripted hostile aggregator (an AggregatorClient stub, no network) drives a site through a
SecAgg+ round and then asks it to unmask both secrets of one site; the site refuses, tells
the aggregator and serves on. Phases its plan does not enable, and a training task in the
clear under secure aggregation, are refused."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from accord.collaborator.accept import Refused
from accord.collaborator.secure_site import SecureSite
from accord.collaborator.site import build_collaborator, expected_cohort
from accord.errors import RefusedError
from accord.messages import Action, FederationInfo, Task, TaskAssignment, TaskResult
from accord.plan.aggregator_settings import SecureAggregationSettings
from accord.plan.secure_aggregation import secagg_params
from accord.secagg.server import ServerSession
from accord.strategies.secure_phases import decode_entries, encode_entries, encode_opening, encode_request, update_length
from accord.tensors.digest import model_digest
from accord.tensors.state import load_state
from accord.workspace.initialize import initialize_model

SEED = bytes(range(32))
SECURE = {"aggregator.settings.secure_aggregation": {"enabled": True, "clip": 10.0}, "collaborator.settings.opt_treatment": "RESET"}
TASKS = (Task("aggregated_model_validation", "validate"), Task("train", "train", {}, True), Task("locally_tuned_model_validation", "validate"))


class ScriptedAggregator:
    """An AggregatorClient whose assignments come from ``next_assignment`` (it sees what was sent)."""

    def __init__(self, model, next_assignment) -> None:
        self.model, self.next_assignment = model, next_assignment
        self.sent: list[TaskResult] = []

    def join(self) -> FederationInfo:
        return FederationInfo("", 1, 0)

    def get_tasks(self) -> TaskAssignment:
        return self.next_assignment(self.sent)

    def get_model(self, round_number, expected=None):
        return self.model

    def send_result(self, result, encoded=None) -> None:
        self.sent.append(result)

    def close(self) -> None:
        pass


def hostile_round(model, names, site: str, unmask: tuple[list[str], list[str]]):
    """The assignments of one honest SecAgg+ round for ``site`` (the others simulated by SecureSite),
    except that the unmask request is ``unmask``; then QUIT."""
    settings = SecureAggregationSettings(enabled=True, clip=10.0)
    server = ServerSession(secagg_params(settings, len(names)), names, SEED, update_length(model))
    others = {n: SecureSite(n, settings) for n in names if n != site}
    cohort = sorted(names)
    script = []

    def step(sent):
        if not script:
            for name, other in others.items():
                server.add_advert(name, other.answer("advertise", 0, encode_opening(SEED, names), model))
            script.append("advertise")
            return TaskAssignment(Action.RUN, 0, (Task("advertise", "phase"),), phase="advertise", payload=encode_opening(SEED, names))
        if script[-1] == "advertise":
            server.add_advert(site, sent[-1].payload)
            roster = encode_entries(server.roster(), cohort)
            for name, other in others.items():
                server.add_shares(name, decode_entries(other.answer("share", 0, roster, model), cohort, "shares"))
            script.append("share")
            return TaskAssignment(Action.RUN, 0, (Task("share", "phase"),), phase="share", payload=roster)
        if script[-1] == "share":
            server.add_shares(site, decode_entries(sent[-1].payload, cohort, "shares"))
            script.append("mask")
            return TaskAssignment(Action.RUN, 0, TASKS, phase="mask", payload=encode_entries(server.shares_for(site), cohort))
        if script[-1] == "mask":
            script.append("unmask")
            return TaskAssignment(Action.RUN, 0, (Task("unmask", "phase"),), phase="unmask", payload=encode_request(*unmask))
        return TaskAssignment(Action.QUIT, 1)

    return step


def site_of(workspace_factory, overrides, script_for):
    plan = workspace_factory(["collaborator1", "collaborator2", "collaborator3"], rounds=1, overrides=overrides)
    initialize_model(plan)
    model = load_state(plan.resolve_path(plan.model.aggregator.settings.init_state_path))
    client = ScriptedAggregator(model, script_for(model))
    return build_collaborator(plan, "collaborator1", client), client, model


def test_a_site_refuses_to_unmask_both_secrets_of_one_site_and_tells_the_aggregator(workspace_factory, caplog) -> None:
    names = ["collaborator1", "collaborator2", "collaborator3"]
    hostile = (names, ["collaborator3"])  # collaborator3 named survivor AND dropped: its b and its mask key
    collaborator, client, model = site_of(workspace_factory, SECURE, lambda m: hostile_round(m, names, "collaborator1", hostile))
    with caplog.at_level(logging.ERROR, logger="accord.collaborator"):
        collaborator.run()
    phases = [(r.phase, r.task) for r in client.sent]
    assert phases == [("advertise", "advertise"), ("share", "share"), ("mask", "aggregated_model_validation"),
                      ("mask", "train"), ("mask", "locally_tuned_model_validation"), ("unmask", "unmask")]
    masked = client.sent[3]
    assert set(masked.tensors) == {"secagg.masked"} and masked.tensors["secagg.masked"].dtype.name == "int64"
    assert masked.model_digest == model_digest(model, 0)
    refusal = client.sent[-1]
    assert refusal.failure.startswith("refused by the site: ") and "named both survivor and dropped" in refusal.failure
    assert not refusal.payload  # no reveal left the site
    assert "named both survivor and dropped" in caplog.text  # the site logs why


def test_a_site_reveals_in_one_session_a_round() -> None:
    """A second session of the same round (an aggregator that restarted the round's phases) is
    refused its unmask request once the first session revealed; a retry in the same session is not."""
    names = ["a", "b", "c"]
    model = {"w": np.zeros(4, np.float32)}
    settings = SecureAggregationSettings(enabled=True)

    def session_round(sites, seed):
        server = ServerSession(secagg_params(settings, 3), names, seed, update_length(model))
        for n in names:
            server.add_advert(n, sites[n].answer("advertise", 0, encode_opening(seed, names), model))
        roster = encode_entries(server.roster(), names)
        for n in names:
            server.add_shares(n, decode_entries(sites[n].answer("share", 0, roster, model), names, "shares"))
        for n in names:
            reply = TaskResult(n, 0, "train", 5, {}, {"w": np.full(4, 0.5, np.float32)}, phase="mask")
            masked = sites[n].masked(reply, encode_entries(server.shares_for(n), names), model)
            server.add_masked(n, masked.tensors["secagg.masked"].view(np.uint64))
        return encode_request(*server.unmask_request())

    sites = {n: SecureSite(n, settings) for n in names}
    request = session_round(sites, SEED)
    first = sites["a"].answer("unmask", 0, request, model)
    assert sites["a"].answer("unmask", 0, request, model) == first  # a retry of the same request
    request = session_round(sites, bytes(32))  # the round's phases again, a fresh seed
    with pytest.raises(RefusedError, match="reveals in one session a round"):
        sites["a"].answer("unmask", 0, request, model)
    sites["b"].answer("unmask", 0, request, model)  # b had not revealed in this round


def test_a_site_refuses_phases_and_clear_updates_its_plan_does_not_allow(workspace_factory) -> None:
    advertise = TaskAssignment(Action.RUN, 0, (Task("advertise", "phase"),), phase="advertise", payload=b"")
    plain, client, _ = site_of(workspace_factory, {}, lambda m: lambda sent: advertise)
    with pytest.raises(Refused, match="phase 'advertise', which this site does not run"):
        plain.run()
    assert client.sent[-1].failure == "phase 'advertise' refused by the site" and client.sent[-1].phase == "advertise"

    clear = TaskAssignment(Action.RUN, 0, TASKS, phase="train")
    secure, client, _ = site_of(workspace_factory, SECURE, lambda m: lambda sent: clear)
    with pytest.raises(Refused, match="training task in the clear"):
        secure.run()
    assert "refused by the site: its plan enables secure aggregation" in client.sent[-1].failure
    assert not any(r.tensors for r in client.sent)


def test_a_site_refuses_a_cohort_below_the_threshold_its_own_plan_sets(workspace_factory, caplog) -> None:
    """Review finding 4: in a federation of nine (default threshold 6), a hostile aggregator names
    a cohort of three (victim, colluder, one it will call dropped) so that the threshold would
    fall to 2. The site derives its floor from its own plan's collaborators list and sampling,
    refuses, logs why and tells the aggregator; no advert leaves it."""
    names = [f"collaborator{i}" for i in range(1, 10)]
    plan = workspace_factory(names, rounds=1, overrides=SECURE)
    initialize_model(plan)
    model = load_state(plan.resolve_path(plan.model.aggregator.settings.init_state_path))
    small = encode_opening(SEED, names[:3])
    opening = TaskAssignment(Action.RUN, 0, (Task("advertise", "phase"),), phase="advertise", payload=small)
    client = ScriptedAggregator(model, lambda sent: opening if not sent else TaskAssignment(Action.QUIT, 1))
    collaborator = build_collaborator(plan, "collaborator1", client)
    with caplog.at_level(logging.ERROR, logger="accord.collaborator"):
        collaborator.run()
    refusal = client.sent[-1]
    assert refusal.phase == "advertise" and not refusal.payload
    assert "secure cohort of 3 sites for round 0, fewer than the threshold 6" in refusal.failure
    assert "fewer than the threshold 6 this site's own plan sets" in caplog.text


def test_the_plans_threshold_floor_holds_whatever_cohort_is_named() -> None:
    """The floor is the plan's threshold if set, else the default for the expected cohort; a
    cohort at or above it is taken with the larger of the two thresholds."""
    model = {"w": np.zeros(4, np.float32)}
    names = [f"s{i}" for i in range(100)]
    site = SecureSite("s0", SecureAggregationSettings(enabled=True), expected_cohort=100)
    assert site.floor == 67
    with pytest.raises(RefusedError, match=r"secure cohort of 66 sites .* fewer than the threshold 67"):
        site.answer("advertise", 0, encode_opening(SEED, names[:66]), model)
    site.answer("advertise", 0, encode_opening(SEED, names[:70]), model)
    assert site._session is not None and site._session.params.threshold == 67  # not ceil(2 * 70 / 3) = 47
    fixed = SecureSite("s0", SecureAggregationSettings(enabled=True, threshold=5), expected_cohort=100)
    assert fixed.floor == 5
    with pytest.raises(RefusedError, match="secure cohort of 4 sites"):
        fixed.answer("advertise", 0, encode_opening(SEED, names[:4]), model)


def test_a_site_refuses_a_round_seed_it_advertised_under_before() -> None:
    """Review finding 6: signed statements bind the round seed, so a reused seed would let
    another session's signatures count; a retry of the same opening gets the same advert."""
    model = {"w": np.zeros(4, np.float32)}
    names = ["a", "b", "c"]
    site = SecureSite("a", SecureAggregationSettings(enabled=True))
    advert = site.answer("advertise", 0, encode_opening(SEED, names), model)
    assert site.answer("advertise", 0, encode_opening(SEED, names), model) == advert  # a transport retry
    site.answer("advertise", 0, encode_opening(bytes(32), names), model)  # a new session, a fresh seed
    for round_number in (0, 1):
        with pytest.raises(RefusedError, match="a round seed this site already advertised under"):
            site.answer("advertise", round_number, encode_opening(SEED, names), model)


def test_the_expected_cohort_is_the_plans_sampling_of_its_collaborators(workspace_factory) -> None:
    names = [f"collaborator{i}" for i in range(1, 10)]
    sampled = workspace_factory(names, rounds=1, overrides={**SECURE, "aggregator.settings.sampling": {"count": 5}})
    assert expected_cohort(sampled) == 5
    assert expected_cohort(workspace_factory(names, rounds=1, overrides=SECURE)) == 9
    groups = [{"name": "learners", "tasks": ["train"], "collaborators": names[:4]}]
    static = workspace_factory(names, rounds=1, overrides={**SECURE, "assigner.settings.task_groups": groups})
    assert expected_cohort(static) == 4  # the sites its task groups name
