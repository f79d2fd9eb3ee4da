"""Signed SecAgg+ against a lying aggregator (accord.secagg.signing over accord.pki.signatures,
real certificates from a federation CA): signed adverts, the consistency check, both sides of
every refusal."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from pathlib import Path

import pytest

from accord.pki.ca import certify, make_federation_pki
from accord.pki.keys import load_private_key
from accord.pki.layout import CertLayout
from accord.pki.signatures import CollaboratorVerifier, signer_for
from accord.secagg import crypto
from accord.secagg.messages import (
    Advert,
    SecAggRefused,
    SignedAdvert,
    decode_confirmation,
    encode_advert,
    encode_confirmation,
    encode_signed_advert,
    read_advert,
)
from accord.secagg.signing import Signing, advert_statement, survivors_statement
from tests.secagg_round import ROUND, Round, plain

COUNT = 6
NAMES = [f"site{i:03d}" for i in range(COUNT)]
AGGREGATOR = "localhost"


@dataclasses.dataclass
class Federation:
    cert_dir: Path
    verifier: CollaboratorVerifier
    signings: dict[str, Signing]
    foreign: dict[str, Signing]
    foreign_dir: Path


def _signing(cert_dir: Path, kind: str, name: str, verifier: CollaboratorVerifier) -> Signing:
    cert_path, key_path, _ = CertLayout(cert_dir).leaf_paths(kind, name)
    return Signing(cert_path.read_bytes(), signer_for(load_private_key(key_path)), verifier)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    """The federation's CA with an aggregator, six EC collaborators and one RSA one; a foreign
    CA that issued certificates with the same names."""
    cert_dir = tmp_path_factory.mktemp("pki")
    make_federation_pki(cert_dir, AGGREGATOR, NAMES)
    certify(cert_dir, "collaborator", "rsa-site", "rsa")
    verifier = CollaboratorVerifier(CertLayout(cert_dir).chain)
    signings = {name: _signing(cert_dir, "collaborator", name, verifier) for name in [*NAMES, "rsa-site"]}
    signings[AGGREGATOR] = _signing(cert_dir, "aggregator", AGGREGATOR, verifier)
    other = tmp_path_factory.mktemp("foreign")
    make_federation_pki(other, AGGREGATOR, NAMES[:2])
    foreign = {name: _signing(other, "collaborator", name, verifier) for name in NAMES[:2]}
    return Federation(cert_dir, verifier, signings, foreign, other)


def signed_round(federation: Federation, *, server_checks: bool = False) -> Round:
    signings = {name: federation.signings[name] for name in NAMES}
    return Round(plain(COUNT), COUNT, 8, signings=signings, verify=federation.verifier if server_checks else None)


def test_a_signed_round_sums_like_an_unsigned_one(federation: Federation) -> None:
    honest = signed_round(federation, server_checks=True)
    honest.check(honest.run())
    dropping = signed_round(federation, server_checks=True)
    dropping.check(dropping.run({"mask": {"site002"}, "confirm": {"site004"}}))
    assert dropping.survivors == ["site000", "site001", "site003", "site004", "site005"]


def test_unsigned_sessions_read_signed_adverts_and_a_signing_one_refuses_unsigned_ones(federation: Federation) -> None:
    mixed = Round(plain(COUNT), COUNT, 8, signings={"site000": federation.signings["site000"]})
    roster = mixed.advertise()
    with pytest.raises(SecAggRefused, match=r"the advert of 'site00[1-5]' is unsigned, and this federation signs its adverts"):
        mixed.sites["site000"].share(roster)
    mixed.share(skip={"site000"})
    survivors, dropped = mixed.mask()
    with pytest.raises(SecAggRefused, match="has no signing key"):
        mixed.sites["site001"].confirm(survivors, dropped)
    for name in survivors:
        mixed.server.add_reveal(name, mixed.sites[name].unmask(survivors, dropped))
    mixed.check(mixed.server.result())


def _substitute(roster: dict[str, bytes], victim: str, advert: bytes) -> dict[str, bytes]:
    return {**roster, victim: advert}


def _neighbour_of(federation_round: Round, victim: str) -> str:
    graph = federation_round.server._graph
    assert graph is not None
    return graph.of(victim)[0]


def test_a_roster_with_the_aggregators_keys_for_a_site_is_refused(federation: Federation) -> None:
    """The man in the middle: the aggregator puts its own X25519 keys in site001's place."""
    attacked = signed_round(federation)
    roster = attacked.advertise()
    victim, honest = "site001", _neighbour_of(attacked, "site001")
    own = read_advert(roster[victim])
    mitm = Advert(crypto.public_bytes(crypto.X25519PrivateKey.generate()), crypto.public_bytes(crypto.X25519PrivateKey.generate()))
    def signed_by(signer: Signing, round_seed: bytes = ROUND) -> bytes:
        return encode_signed_advert(SignedAdvert(mitm, signer.credential, signer.sign(advert_statement(round_seed, victim, mitm))))

    forged = {
        "unsigned": (encode_advert(mitm), "is unsigned"),
        "the site's signature on other keys": (encode_signed_advert(SignedAdvert(mitm, own.credential, own.signature)), "substituted key"),
        "signed by the aggregator's certificate": (signed_by(federation.signings[AGGREGATOR]), "substituted key"),
        "signed by another collaborator": (signed_by(federation.signings["site003"]), "substituted key"),
        "signed by a foreign CA's certificate of that name": (signed_by(federation.foreign[victim]), "substituted key"),
        "the site's own signature from another round": (signed_by(federation.signings[victim], b"another round" * 3), "substituted key"),
    }
    for label, (advert, reason) in forged.items():
        with pytest.raises(SecAggRefused, match=reason) as refused:
            attacked.sites[honest].share(_substitute(roster, victim, advert))
        assert victim in str(refused.value), label
    # The honest roster still goes through: the refusals left the session as it was.
    assert set(attacked.sites[honest].share(roster))


def test_the_refusing_verifier_logs_why(federation: Federation, caplog: pytest.LogCaptureFixture) -> None:
    aggregator, site = federation.signings[AGGREGATOR], federation.signings["site000"]
    with caplog.at_level(logging.WARNING, logger="accord.pki"):
        assert not federation.verifier("site000", federation.signings["site003"].credential, b"x", federation.signings["site003"].sign(b"x"))
        assert not federation.verifier(AGGREGATOR, aggregator.credential, b"x", aggregator.sign(b"x"))
        assert not federation.verifier("site000", federation.foreign["site000"].credential, b"x", federation.foreign["site000"].sign(b"x"))
        assert not federation.verifier("site000", site.credential, b"y", site.sign(b"x"))
        assert not federation.verifier("site000", b"not a certificate", b"x", site.sign(b"x"))
    logged = caplog.text
    assert "its certificate names 'site003'" in logged
    assert "not a collaborator's" in logged
    assert "not signed by this federation's signing CA" in logged or "not by this federation's signing CA" in logged
    assert "does not verify under its certificate's key" in logged
    assert "cannot be parsed" in logged
    assert federation.verifier("site000", site.credential, b"x", site.sign(b"x"))
    rsa_site = federation.signings["rsa-site"]
    assert federation.verifier("rsa-site", rsa_site.credential, b"x", rsa_site.sign(b"x"))


def test_a_revoked_certificate_no_longer_verifies(federation: Federation) -> None:
    site = federation.signings["site002"]
    from cryptography import x509

    serial = x509.load_pem_x509_certificate(site.credential).serial_number
    revoked: set[int] = set()
    revoking = CollaboratorVerifier(CertLayout(federation.cert_dir).chain, revoked=lambda: revoked)
    assert revoking("site002", site.credential, b"x", site.sign(b"x"))
    revoked.add(serial)  # revoked after its certificate was checked once: refused from then on
    assert not revoking("site002", site.credential, b"x", site.sign(b"x"))
    assert not CollaboratorVerifier(CertLayout(federation.cert_dir).chain, revoked=lambda: revoked)("site002", site.credential, b"x", site.sign(b"x"))


def test_a_remembered_certificate_is_refused_once_it_expires(federation: Federation, caplog: pytest.LogCaptureFixture) -> None:
    """A certificate whose chain was checked once is remembered, but its validity is checked on
    every call: past its end it is refused (and accepted again at a time it is valid)."""
    from cryptography import x509

    site = federation.signings["site004"]
    checking = CollaboratorVerifier(CertLayout(federation.cert_dir).chain)
    assert checking("site004", site.credential, b"x", site.sign(b"x"))  # checked and remembered
    checking.now = x509.load_pem_x509_certificate(site.credential).not_valid_after_utc + dt.timedelta(seconds=1)
    with caplog.at_level(logging.WARNING, logger="accord.pki"):
        assert not checking("site004", site.credential, b"x", site.sign(b"x"))
    assert "expired at" in caplog.text
    checking.now = None
    assert checking("site004", site.credential, b"x", site.sign(b"x"))


def test_a_changed_chain_forgets_the_certificates_checked_under_the_old_one(
    federation: Federation, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chain = tmp_path / "chain.pem"
    chain.write_bytes(CertLayout(federation.cert_dir).chain.read_bytes())
    site = federation.signings["site005"]
    checking = CollaboratorVerifier(chain)
    assert checking("site005", site.credential, b"x", site.sign(b"x"))
    replacement = tmp_path / "new.pem"
    replacement.write_bytes(CertLayout(federation.foreign_dir).chain.read_bytes())  # another federation's CA
    replacement.replace(chain)
    assert not checking("site005", site.credential, b"x", site.sign(b"x"))
    chain.unlink()
    with caplog.at_level(logging.WARNING, logger="accord.pki"):
        assert not checking("site005", site.credential, b"x", site.sign(b"x"))
    assert f"the federation's chain does not check out: CA certificate chain {chain} does not exist (fix: " in caplog.text


def test_the_server_refuses_an_unsigned_or_forged_advert(federation: Federation) -> None:
    checked = signed_round(federation, server_checks=True)
    real = checked.sites["site001"].advertise()
    own = read_advert(real)
    other = Advert(crypto.public_bytes(crypto.X25519PrivateKey.generate()), crypto.public_bytes(crypto.X25519PrivateKey.generate()))
    with pytest.raises(SecAggRefused, match="'site001' is unsigned"):
        checked.server.add_advert("site001", encode_advert(other))
    with pytest.raises(SecAggRefused, match="not signed by a valid certificate of 'site001'"):
        checked.server.add_advert("site001", encode_signed_advert(SignedAdvert(other, own.credential, own.signature)))
    with pytest.raises(SecAggRefused, match="not signed by a valid certificate of 'site002'"):
        checked.server.add_advert("site002", real)  # site001's advert sent as site002's
    checked.server.add_advert("site001", real)
    assert "site001" in checked.server._adverts


def masked(federation: Federation) -> Round:
    """A signed round whose sites all masked; the consistency check is next."""
    federation_round = signed_round(federation)
    federation_round.advertise()
    federation_round.share()
    federation_round.mask()
    return federation_round


def _confirmations(federation_round: Round, names: list[str]) -> dict[str, bytes]:
    return {name: federation_round.sites[name].confirm(federation_round.survivors, federation_round.dropped) for name in names}


def test_a_site_reveals_only_after_the_threshold_of_valid_confirmations(federation: Federation) -> None:
    run = masked(federation)
    survivors, dropped, threshold = run.survivors, run.dropped, run.params.threshold
    site = run.sites["site000"]
    with pytest.raises(SecAggRefused, match="refuses to reveal before the consistency check: it has confirmed no survivor list"):
        site.unmask(survivors, dropped, {})
    confirmations = _confirmations(run, NAMES[: threshold - 1])
    with pytest.raises(SecAggRefused, match=rf"carries {threshold - 1} survivor signatures .* fewer than the threshold {threshold}"):
        site.unmask(survivors, dropped, confirmations)
    with pytest.raises(SecAggRefused, match="0 survivor signatures"):
        site.unmask(survivors, dropped)
    forged = {**confirmations, NAMES[threshold - 1]: confirmations[NAMES[0]]}  # site000's signature as another's
    with pytest.raises(SecAggRefused, match=f"confirmation of '{NAMES[threshold - 1]}' is not its valid signature"):
        site.unmask(survivors, dropped, forged)
    with pytest.raises(SecAggRefused, match="not its valid signature"):
        site.unmask(survivors, dropped, {**confirmations, NAMES[threshold - 1]: encode_confirmation(b"\x01" * 96)})
    confirmations = _confirmations(run, NAMES)
    reveals = site.unmask(survivors, dropped, confirmations)
    assert reveals and site.unmask(survivors, dropped, confirmations) == reveals


def test_confirmations_of_another_survivor_list_do_not_count(federation: Federation) -> None:
    """The aggregator tells site000 that site005 dropped, and shows it the others' confirmations
    of the list in which site005 survived: site000 refuses to reveal site005's mask key."""
    run = masked(federation)
    survivors, dropped = run.survivors, run.dropped
    honest = {name: run.sites[name].confirm(survivors, dropped) for name in NAMES[1:5]}
    lie = ([name for name in survivors if name != "site005"], [*dropped, "site005"])
    told = run.sites["site000"].confirm(*lie)
    with pytest.raises(SecAggRefused, match="not its valid signature on the survivor list this site was sent"):
        run.sites["site000"].unmask(*lie, {**honest, "site000": told})
    with pytest.raises(SecAggRefused, match="not the ones it confirmed"):
        run.sites["site000"].unmask(survivors, dropped, honest)
    with pytest.raises(SecAggRefused, match="already confirmed other survivor lists"):
        run.sites["site000"].confirm(survivors, dropped)


def test_survivors_that_never_masked_cannot_confirm(federation: Federation) -> None:
    """The aggregator names two sites that never masked as survivors, to pass the threshold."""
    run = signed_round(federation)
    run.advertise()
    run.share()
    run.mask(skip={"site004", "site005"})
    padded = NAMES
    for absent in ("site004", "site005"):
        with pytest.raises(SecAggRefused, match="cannot confirm now: its SecAgg session is shared"):
            run.sites[absent].confirm(padded, [])
    present = {name: run.sites[name].confirm(padded, []) for name in NAMES[:3]}
    with pytest.raises(SecAggRefused, match=r"carries 3 survivor signatures .* fewer than the threshold 4"):
        run.sites["site000"].unmask(padded, [], present)


def test_the_server_checks_and_closes_the_consistency_check(federation: Federation) -> None:
    run = signed_round(federation, server_checks=True)
    run.advertise()
    run.share()
    survivors, dropped = run.mask()
    with pytest.raises(SecAggRefused, match="taking confirmations, not taking reveals"):
        run.server.add_reveal("site000", {})
    good = run.sites["site000"].confirm(survivors, dropped)
    with pytest.raises(SecAggRefused, match="confirmation of 'site001' is not its valid signature"):
        run.server.add_confirmation("site001", good)
    run.server.add_confirmation("site000", good)
    run.server.add_confirmation("site000", good)  # a retry
    with pytest.raises(SecAggRefused, match="only 1 sites confirmed the survivor list, fewer than the SecAgg threshold 4"):
        run.server.confirmations()
    for name in NAMES[1:]:
        run.server.add_confirmation(name, run.sites[name].confirm(survivors, dropped))
    confirmations = run.server.confirmations()
    assert set(confirmations) == set(NAMES)
    assert decode_confirmation(confirmations["site003"])
    with pytest.raises(SecAggRefused, match="taking reveals, not taking confirmations"):
        run.server.add_confirmation("site003", encode_confirmation(b"\x02" * 90))
    for name in NAMES:
        run.server.add_reveal(name, run.sites[name].unmask(survivors, dropped, confirmations))
    run.check(run.server.result())


def test_the_statements_bind_the_round_the_names_and_the_lists() -> None:
    advert = Advert(bytes(32), bytes(range(32)))
    assert advert_statement(ROUND, "a", advert) != advert_statement(ROUND, "b", advert)
    assert advert_statement(ROUND, "a", advert) != advert_statement(ROUND[::-1], "a", advert)
    assert survivors_statement(ROUND, b"r", ["a", "b"], ["c"]) == survivors_statement(ROUND, b"r", ["b", "a"], ["c"])
    assert survivors_statement(ROUND, b"r", ["a", "b"], ["c"]) != survivors_statement(ROUND, b"r", ["a"], ["b", "c"])
    assert survivors_statement(ROUND, b"r", ["ab"], []) != survivors_statement(ROUND, b"r", ["a", "b"], [])
    assert survivors_statement(ROUND, b"r", ["a"], []) != survivors_statement(ROUND, b"s", ["a"], [])


@pytest.mark.parametrize(
    "blob, reason",
    [
        (b"ASG\x03\x05" + bytes(64), "truncated before its credential"),
        (b"ASG\x03\x05" + bytes(64) + b"\x00\x00", "credential of 0 bytes"),
        (b"ASG\x03\x05" + bytes(64) + b"\x00\x01c", "truncated before its signature"),
        (b"ASG\x03\x05" + bytes(64) + b"\x00\x01c\x00\x01s!", "1 bytes after its signature"),
        (b"ASG\x03\x05" + bytes(10), "truncated before its keys"),
    ],
)
def test_malformed_signed_adverts_are_refused(blob: bytes, reason: str) -> None:
    with pytest.raises(SecAggRefused, match=reason):
        read_advert(blob)


def test_signed_adverts_and_confirmations_round_trip() -> None:
    signed = SignedAdvert(Advert(bytes(32), b"\x01" * 32), b"cert", b"sig")
    assert read_advert(encode_signed_advert(signed)) == signed
    assert read_advert(encode_advert(signed.advert)) == SignedAdvert(signed.advert)
    assert decode_confirmation(encode_confirmation(b"sig")) == b"sig"
    with pytest.raises(SecAggRefused, match="after its signature"):
        decode_confirmation(encode_confirmation(b"sig") + b"x")


def test_confirmations_from_another_session_with_the_same_seed_do_not_count(federation: Federation) -> None:
    """Review finding 6: a hostile aggregator reuses a session's round seed in a new session of
    the round (fresh keys, the same survivor lists). The old session's confirmations sign another
    roster (its digest binds the keys), so they do not verify in the new session, at the site or
    at the server."""
    old = masked(federation)
    signings = {name: federation.signings[name] for name in NAMES}
    new = Round(plain(COUNT), COUNT, 8, seed=1, signings=signings, verify=federation.verifier)  # other keys, same seed
    new.advertise()
    new.share()
    new.mask()
    assert (new.survivors, new.dropped) == (old.survivors, old.dropped)
    replayed = _confirmations(old, NAMES)
    new.sites["site000"].confirm(new.survivors, new.dropped)
    with pytest.raises(SecAggRefused, match="not its valid signature on the survivor list this site was sent"):
        new.sites["site000"].unmask(new.survivors, new.dropped, replayed)
    with pytest.raises(SecAggRefused, match="not its valid signature on this round's survivor list"):
        new.server.add_confirmation("site001", replayed["site001"])
    fresh = _confirmations(new, NAMES)
    assert new.sites["site000"].unmask(new.survivors, new.dropped, fresh)


def test_a_chain_rewritten_in_place_with_its_size_and_mtime_is_still_seen_as_changed(federation: Federation, tmp_path: Path) -> None:
    """The chain file's version is its content, not its (mtime, size, inode): a rotation copied
    over the old file in place with its timestamp kept (cp -p, rsync -t, an archive's normalised
    mtimes) and of the same length must still forget the certificates the old CA issued."""
    import os

    ours, theirs = CertLayout(federation.cert_dir).chain.read_bytes(), CertLayout(federation.foreign_dir).chain.read_bytes()
    size = max(len(ours), len(theirs))
    chain = tmp_path / "chain.pem"
    chain.write_bytes(ours + b"\n" * (size - len(ours)))  # PEM ignores text around the blocks
    os.utime(chain, ns=(1_000_000_000, 1_000_000_000))
    site = federation.signings["site003"]
    checking = CollaboratorVerifier(chain)
    assert checking("site003", site.credential, b"x", site.sign(b"x"))
    before = chain.stat()
    with chain.open("r+b") as out:  # the same inode, the same length
        out.write(theirs + b"\n" * (size - len(theirs)))
    os.utime(chain, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = chain.stat()
    assert (after.st_mtime_ns, after.st_size, after.st_ino) == (before.st_mtime_ns, before.st_size, before.st_ino)
    assert not checking("site003", site.credential, b"x", site.sign(b"x"))  # our CA's certificate, under another CA
    assert not CollaboratorVerifier(chain)("site003", site.credential, b"x", site.sign(b"x"))  # as a fresh verifier says


def test_a_certificate_checked_under_the_old_chain_while_it_changed_is_checked_again(
    federation: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that read the old chain and is still checking when another call sees the new one
    (the aggregator's RPC threads) must not leave its certificate remembered under the new one."""
    from accord.pki import signatures

    chain = tmp_path / "chain.pem"
    chain.write_bytes(CertLayout(federation.cert_dir).chain.read_bytes())
    site, other = federation.signings["site003"], federation.foreign["site001"]
    checking = CollaboratorVerifier(chain)
    full_check = signatures.verify_peer_certificate

    def rotated_meanwhile(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(signatures, "verify_peer_certificate", full_check)
        chain.write_bytes(CertLayout(federation.foreign_dir).chain.read_bytes())
        assert checking("site001", other.credential, b"x", other.sign(b"x"))  # a concurrent call, under the new chain
        return full_check(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(signatures, "verify_peer_certificate", rotated_meanwhile)
    assert checking("site003", site.credential, b"x", site.sign(b"x"))  # checked under the old chain
    assert not checking("site003", site.credential, b"x", site.sign(b"x"))  # the new chain's CA did not issue it
