"""CPU of the SecAgg+ protocol library (accord.secagg) per phase, per site and at the server.

For each cohort size N (``--sizes``, default 10 50 100) and dropout share (``--dropouts``,
default 0 and 0.3), one round of SecAgg+ runs in this process with the defaults
``SecAggParams.for_cohort(N, dropout=--design-dropout)`` (by default a third: at N <= 100 that
is plain SecAgg, every site neighbours every other; 0.1 gives SecAgg+'s smaller graphs) over a
model of ``--length`` values (default 100,000). The dropped sites leave after sharing, before
masking: the costliest case for the server, which must rebuild each one's mask key and remove
its pairwise mask from each survivor's vector.

Figures (CPU milliseconds, ``time.process_time``; min and median over ``--repeat`` rounds):

- server adverts / shares / masked / reveals: the sum over sites of add_advert (+ roster),
  add_shares (+ shares_for), add_masked (+ unmask_request), add_reveal (with the survivor's
  correction in a signed session: its pair masks with the dropped, which the result then need
  not expand);
- server result: the unmasking (Shamir reconstructions, PRG expansions, decode);
- server total: all of the above;
- site advertise / share / mask / unmask: the median over the sites of that one call;
- with ``--signed`` (the deployment's signed SecAgg+: accord.secagg.signing over a federation
  PKI made for the run, ECDSA P-256 collaborator certificates, the default key): adverts are signed and checked
  (by the server and by each site for its neighbours), and the consistency check runs: server
  confirms (add_confirmation + confirmations) and site confirm; site unmask then includes
  checking the threshold of confirmations;
- baseline, in the same run, interleaved: plain NumPy FedAvg summing at the server
  (``total += weight * update`` over the N float64 updates). Ratios are to its median.

Also printed: the bytes one site sends (advert, sealed shares, the uint64 masked vector, its
reveals) and receives (roster, shares for it), and their ratio to a float32 update of the model.

    PYTHONPATH=src .venv/bin/python bench/secagg_protocol.py [--sizes 10 50 100] [--length 100000]
        [--dropouts 0 0.3] [--repeat 3] [--design-dropout 0.333] [--signed]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from _table import Column, min_median_table

from accord.pki.signatures import CollaboratorVerifier
from accord.secagg.params import SecAggParams
from accord.secagg.server import ServerSession
from accord.secagg.signing import Signing, Verifier
from accord.secagg.site import SiteSession

SERVER_PHASES = ("adverts", "shares", "masked", "confirms", "reveals", "result")
SITE_PHASES = ("advertise", "share", "mask", "confirm", "unmask")


def federation_signings(names: list[str], folder: str) -> tuple[dict[str, Signing], Verifier]:
    """A federation PKI in ``folder``: each site's Signing over its own key and certificate, and
    the server's own verifier (as aggregator/serve.py makes it, without revocations)."""
    from accord.collaborator.secure_site import site_signing
    from accord.pki.ca import make_federation_pki

    layout = make_federation_pki(folder, "localhost", names)
    return {name: site_signing(folder, name) for name in names}, CollaboratorVerifier(layout.chain)


def answer(site: SiteSession, survivors: list[str], dropped: list[str], confirmations: Any) -> tuple[dict[str, bytes], Any]:
    """A survivor's unmask reply: its reveals and, in a signed session, its correction (else None)."""
    reveals = site.unmask(survivors, dropped, confirmations)
    return reveals, site.correction() if site.signing is not None else None


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    """The call's result and its CPU milliseconds."""
    start = time.process_time()
    out = call()
    return out, 1e3 * (time.process_time() - start)


def one_round(
    params: SecAggParams,
    count: int,
    length: int,
    dropout: float,
    seed: int,
    signed: tuple[dict[str, Signing], Verifier] | None = None,
) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """(server CPU per phase, median site CPU per phase, bytes of one site) of one round,
    signed if ``signed`` (site -> Signing, the server's verifier) is given."""
    names = [f"site{i:03d}" for i in range(count)]
    round_seed = seed.to_bytes(4, "big") * 8
    rng = np.random.default_rng(seed)
    updates = {name: rng.uniform(-1, 1, length) for name in names}
    signings, verify = signed if signed is not None else (None, None)
    server = ServerSession(params, names, round_seed, length, verify=verify)
    sites = {
        name: SiteSession(params, name, names, round_seed, length, signing=None if signings is None else signings[name])
        for name in names
    }
    gone = set(names[: round(dropout * count)])
    serving = dict.fromkeys(SERVER_PHASES, 0.0)
    site_cpu: dict[str, list[float]] = {phase: [] for phase in SITE_PHASES}
    sizes = dict.fromkeys(("advert", "shares", "masked", "reveals", "correction", "roster", "shares in"), 0)

    def site(phase: str, call: Callable[[], Any]) -> Any:
        out, cpu = timed(call)
        site_cpu[phase].append(cpu)
        return out

    def serve(phase: str, call: Callable[[], Any]) -> Any:
        out, cpu = timed(call)
        serving[phase] += cpu
        return out

    probe = names[-1]
    for name in names:
        advert = site("advertise", sites[name].advertise)
        serve("adverts", lambda name=name, advert=advert: server.add_advert(name, advert))
    roster = serve("adverts", server.roster)
    sizes["advert"], sizes["roster"] = len(sites[probe].advertise()), sum(map(len, roster.values()))
    for name in names:
        sealed = site("share", lambda name=name: sites[name].share(roster))
        serve("shares", lambda name=name, sealed=sealed: server.add_shares(name, sealed))
        if name == probe:
            sizes["shares"] = sum(map(len, sealed.values()))
    for name in names:
        if name in gone:
            continue
        inbox = serve("shares", lambda name=name: server.shares_for(name))
        masked = site("mask", lambda name=name, inbox=inbox: sites[name].mask(inbox, updates[name], 10))
        serve("masked", lambda name=name, masked=masked: server.add_masked(name, masked))
        if name == probe:
            sizes["shares in"], sizes["masked"] = sum(map(len, inbox.values())), masked.nbytes
    survivors, dropped = serve("masked", server.unmask_request)
    confirmations = None
    if signings is not None:
        for name in survivors:
            confirmation = site("confirm", lambda name=name: sites[name].confirm(survivors, dropped))
            serve("confirms", lambda name=name, confirmation=confirmation: server.add_confirmation(name, confirmation))
        confirmations = serve("confirms", server.confirmations)
    for name in survivors:
        # a signed session's survivors send their correction with their reveals (secagg/site.py)
        reveals, correction = site("unmask", lambda name=name: answer(sites[name], survivors, dropped, confirmations))
        serve("reveals", lambda name=name, reveals=reveals, correction=correction: server.add_reveal(name, reveals, correction))
        if name == probe:
            sizes["reveals"] = sum(map(len, reveals.values()))
            sizes["correction"] = 0 if correction is None else correction.nbytes
    (total, weight), cpu = timed(server.result)
    serving["result"] += cpu
    expected = sum(10 * updates[name] for name in survivors)
    assert weight == 10 * len(survivors) and np.abs(total - expected).max() < 1e-4, "the unmasked sum is wrong"
    return serving, {phase: statistics.median(runs) for phase, runs in site_cpu.items() if runs}, sizes


def plain_sum(count: int, length: int, seed: int) -> float:
    """CPU of the plain FedAvg sum at the server: total += weight * update, N times."""
    rng = np.random.default_rng(seed)
    updates = [rng.uniform(-1, 1, length) for _ in range(count)]
    start = time.process_time()
    total = np.zeros(length)
    for update in updates:
        total += 10 * update
    return 1e3 * (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--length", type=int, default=100_000)
    parser.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.3])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--design-dropout", type=float, default=1 / 3, help="for_cohort's dropout (sizes t and k)")
    parser.add_argument("--signed", action="store_true", help="signed adverts and the consistency check (the deployment's)")
    args = parser.parse_args()
    pki = tempfile.TemporaryDirectory(prefix="secagg-pki-")
    signed = federation_signings([f"site{i:03d}" for i in range(max(args.sizes))], pki.name) if args.signed else None
    for count in args.sizes:
        params = SecAggParams.for_cohort(count, dropout=args.design_dropout)
        for dropout in args.dropouts:
            print(
                f"\nN = {count} sites, {args.length:,} values, {dropout:.0%} dropping before masking "
                f"(threshold {params.threshold}, {params.degree(count)} neighbours each)"
            )
            figures: dict[str, list[float]] = {"plain NumPy sum (server)": []}
            for repeat in range(args.repeat):
                figures["plain NumPy sum (server)"].append(plain_sum(count, args.length, repeat))
                serving, per_site, sizes = one_round(params, count, args.length, dropout, repeat, signed)
                for phase, cpu in serving.items():
                    if phase == "confirms" and signed is None:
                        continue
                    figures.setdefault(f"server {phase}", []).append(cpu)
                figures.setdefault("server total", []).append(sum(serving.values()))
                for phase, cpu in per_site.items():
                    figures.setdefault(f"site {phase} (median site)", []).append(cpu)
            min_median_table(Column("CPU", 28), "ms", figures, "plain NumPy sum (server)")
            sent = sizes["advert"] + sizes["shares"] + sizes["masked"] + sizes["reveals"] + sizes["correction"]
            got = sizes["roster"] + sizes["shares in"]
            model = 4 * args.length
            print(
                f"bytes of one site: sent {sent:,} (advert {sizes['advert']}, shares {sizes['shares']:,}, masked "
                f"{sizes['masked']:,}, reveals {sizes['reveals']:,}, correction {sizes['correction']:,}), received {got:,}; "
                f"sent / float32 update {sent / model:.2f}x, (sent + received) / float32 update {(sent + got) / model:.2f}x"
            )


if __name__ == "__main__":
    main()
