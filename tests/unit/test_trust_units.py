"""Issue 10's pure parts: chain checks, served-chain comparison, the nginx -T reader,
the CAA verdict, and that every command storing a version has it checked."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfan.commands import audit, doctor, nginxconf
from certfan.errors import StoreError
from certfan.issue import crypto
from certfan.issue.dns01caa import Caa, CaaAnswer, caa_verdict
from certfan.state import trust
from certfan.state.store import Store
from certfan_lab import extra

SRC = Path(__file__).resolve().parents[2] / "src" / "certfan"
NAME = "media.lab.test"


@pytest.fixture(scope="module")
def chain() -> extra.Chain:
    return extra.chain_of([NAME, "*.media.lab.test"])


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def test_a_complete_chain_to_an_anchor_has_no_problems(chain: extra.Chain) -> None:
    anchors = crypto.load_anchors(chain.root)
    assert crypto.chain_problems(chain.key, chain.leaf + chain.intermediate, [NAME],
                                 anchors) == []
    # the root may come along; without anchors only the links are checked
    assert crypto.chain_problems(chain.key, chain.leaf + chain.intermediate + chain.root,
                                 [NAME], anchors) == []
    assert crypto.chain_problems(chain.key, chain.leaf + chain.intermediate, [NAME], None) == []


@pytest.mark.parametrize(("which", "says"), [
    ("leaf-only", "the leaf alone, without the intermediate certificates of its issuer"),
    ("foreign", "certificate 1 (CN=media.lab.test) is not signed by the next one"),
    ("reversed", "out of order: the leaf (CN=media.lab.test) is certificate 2"),
    ("untrusted", "the chain does not end at a trusted root"),
    ("names", "the certificate does not cover other.lab.test"),
    ("key", "the private key does not match the certificate"),
])
def test_each_problem_is_named(chain: extra.Chain, which: str, says: str) -> None:
    other = extra.chain_of(["x.lab.test"])
    key, full, names, anchors = chain.key, chain.leaf + chain.intermediate, [NAME], chain.root
    if which == "leaf-only":
        full = chain.leaf
    elif which == "foreign":
        full = chain.leaf + chain.foreign
    elif which == "reversed":
        full = chain.intermediate + chain.leaf
    elif which == "untrusted":
        anchors = other.root
    elif which == "names":
        names = [NAME, "other.lab.test"]
    else:
        key = other.key
    found = crypto.chain_problems(key, full, names, crypto.load_anchors(anchors))
    assert len(found) == 1 and found[0].startswith(says), found


def test_wildcards_cover_one_label_and_are_needed_as_such() -> None:
    assert crypto.uncovered_names(["*.lab.test"], ["a.lab.test", "A.Lab.Test."]) == ()
    assert crypto.uncovered_names(["*.lab.test"], ["a.b.lab.test", "lab.test"]) == (
        "a.b.lab.test", "lab.test")
    assert crypto.uncovered_names(["a.lab.test"], ["*.lab.test"]) == ("*.lab.test",)


def test_same_chain_says_how_a_served_chain_differs(chain: extra.Chain) -> None:
    full = chain.leaf + chain.intermediate
    leaf, inter = _der(chain.leaf), _der(chain.intermediate)
    assert crypto.same_chain([leaf, inter], full) is None
    assert crypto.same_chain([leaf], full) == (
        "serves the leaf only, without the 1 intermediate(s) deployed")
    assert crypto.same_chain([leaf, _der(chain.foreign)], full) == (
        "serves other intermediates than the 1 deployed")
    assert crypto.same_chain([inter], full) == "serves another leaf certificate"


def test_store_save_refuses_what_cannot_be_served(tmp_path: Path, chain: extra.Chain) -> None:
    store = Store(tmp_path)
    anchors = crypto.load_anchors(chain.root)
    with pytest.raises(StoreError, match="refusing to store: the leaf alone"):
        store.save("media", chain.key, chain.leaf, order_url=None, key_type="ec-p256",
                   names=[NAME], anchors=anchors)
    assert store.versions("media") == []
    release = store.save("media", chain.key, chain.leaf + chain.intermediate, order_url=None,
                         key_type="ec-p256", names=[NAME], anchors=anchors)
    store.activate(release)
    assert store.same_as_current("media", chain.key, chain.leaf + b"\r\n" + chain.intermediate)
    assert store.same_as_current("media", chain.key, chain.leaf + chain.foreign) is None
    leaf = _der(chain.leaf)
    assert store.chain_problem("media", release.version, [leaf]) is not None
    assert store.chain_problem("media", release.version, [leaf, _der(chain.intermediate)]) is None


def test_import_chain_files_are_merged_without_duplicates(chain: extra.Chain) -> None:
    merged = trust.with_intermediates(chain.leaf + chain.intermediate, chain.intermediate)
    assert crypto.split_pem_chain(merged) == crypto.split_pem_chain(
        chain.leaf + chain.intermediate)
    line = trust.refusal(["the leaf alone, without ..."], Path("k.pem"), Path("c.pem"))
    assert line == "refusing to import: c.pem: the leaf alone, without ... (give them with " \
                   "--chain FILE)"


def test_every_store_save_in_the_package_passes_names_and_anchors() -> None:
    """issue, renew, reissue and import: no stored version skips the chain check."""
    calls = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if ".save(" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "save" and path.name != "store.py"
                    and any(k.arg == "key_type" for k in node.keywords)):
                calls.append((path.name, {k.arg for k in node.keywords}))
    assert len(calls) >= 2, calls  # issue/order.py and commands/importing.py at least
    for name, keywords in calls:
        assert {"names", "anchors"} <= keywords, (name, keywords)


def test_ssh_private_key_problem() -> None:
    from certfan_lab import pki

    assert crypto.ssh_private_key_problem(pki.ssh_keypair()[0]) is None
    assert crypto.ssh_private_key_problem(b"hello") == (
        "does not parse as a private key (OpenSSH or PEM)")


DUMP = """# configuration file /etc/nginx/nginx.conf:
http {
    ssl_certificate /etc/ssl/default.pem;  # inherited by servers without their own
    ssl_certificate_key /etc/ssl/default.key;
    upstream app { server 10.0.0.1:8080; }
    include /etc/nginx/sites/*.conf;
}

# configuration file /etc/nginx/sites/a.conf:
server {
    listen 443 ssl;
    server_name media.example.org "*.media.example.org";
    ssl_certificate /etc/certfan/live/media/fullchain.pem;
    ssl_certificate_key /etc/certfan/live/media/privkey.pem;
    location / { return 200 "a;b{c}"; }
}
server {
    listen 443 ssl;
    server_name .old.example.org;
}
server {
    listen 80;
    server_name plain.example.org;
}
"""


def test_server_blocks_from_nginx_T() -> None:
    blocks = nginxconf.server_blocks(DUMP)
    assert [(b.file, b.line, b.names) for b in blocks] == [
        ("/etc/nginx/sites/a.conf", 1, ("media.example.org", "*.media.example.org")),
        ("/etc/nginx/sites/a.conf", 8, (".old.example.org",)),
        ("/etc/nginx/sites/a.conf", 12, ("plain.example.org",)),
    ]
    assert blocks[0].certificates == ("/etc/certfan/live/media/fullchain.pem",)
    assert blocks[1].certificates == ("/etc/ssl/default.pem",)  # inherited: listens ssl
    assert blocks[2].certificates == () and not blocks[2].tls
    assert doctor.server_for(blocks, "MEDIA.example.org") is blocks[0]
    assert doctor.server_for(blocks, "a.media.example.org") is blocks[0]
    assert doctor.server_for(blocks, "*.media.example.org") is blocks[0]
    assert doctor.server_for(blocks, "old.example.org") is blocks[1]
    assert doctor.server_for(blocks, "plain.example.org") is None  # no TLS there


def test_the_dump_runs_like_the_config_test() -> None:
    assert nginxconf.dump_argv(("sudo", "-n", "nginx", "-t")) == ("sudo", "-n", "nginx", "-T")
    assert nginxconf.dump_argv(("/usr/sbin/nginx", "-t", "-c", "/x")) == (
        "/usr/sbin/nginx", "-T", "-c", "/x")
    assert nginxconf.dump_argv(("docker", "exec", "web", "nginx", "-q")) == (
        "docker", "exec", "web", "nginx", "-T")


def test_audit_probes_names_a_client_would_send() -> None:
    assert [audit.sni_of(n) for n in ("_", "~^www\\.", "$host", ".ex.org", "*.ex.org", "a.b")] \
        == [None, None, None, "ex.org", "certfan-probe.ex.org", "a.b"]


@pytest.mark.parametrize(("records", "name", "identities", "allowed"), [
    ((), NAME, (), True),
    ((Caa(0, "issue", "pebble.lab.test"),), NAME, ("pebble.lab.test",), True),
    ((Caa(0, "issue", "other.example; account=1"),), NAME, ("pebble.lab.test",), False),
    ((Caa(0, "issue", ";"),), NAME, ("pebble.lab.test",), False),
    ((Caa(0, "iodef", "mailto:x@y"),), NAME, ("pebble.lab.test",), True),
    ((Caa(0, "issue", "pebble.lab.test"), Caa(0, "issuewild", ";")), "*.lab.test",
     ("pebble.lab.test",), False),
    ((Caa(0, "issue", ";"), Caa(0, "issuewild", "pebble.lab.test")), "*.lab.test",
     ("pebble.lab.test",), True),
    ((Caa(128, "tbs", "x"),), NAME, ("pebble.lab.test",), False),
    ((Caa(0, "issue", "pebble.lab.test"),), NAME, (), None),
])
def test_caa_verdict(records: tuple[Caa, ...], name: str, identities: tuple[str, ...],
                     allowed: bool | None) -> None:
    owner = "lab.test." if records else None
    assert caa_verdict(CaaAnswer(name, owner, records), identities)[0] is allowed


def test_a_chain_that_reaches_a_root_through_a_cross_sign_is_trusted() -> None:
    """[leaf, intermediate, root cross-signed by an older root]: the store's self-signed
    root (same name and key) anchors it, and so does the older root."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes

    from certfan_lab import pki

    root_key, root = pki.new_ca("new root")
    old_key, old = pki.new_ca("old root")
    int_key, inter = extra.intermediate_ca(root_key, root, "issuing CA")
    key, leaf = pki.issue(int_key, inter, [NAME], dt.timedelta(days=90))
    now = dt.datetime.now(dt.UTC)
    cross = (x509.CertificateBuilder().subject_name(root.subject).issuer_name(old.subject)
             .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(days=1))
             .not_valid_after(now + dt.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(old_key, hashes.SHA256()))
    full = pki.cert_pem(leaf) + pki.cert_pem(inter) + pki.cert_pem(cross)
    for anchor in (root, old):
        assert crypto.chain_problems(pki.key_pem(key), full, [NAME],
                                     crypto.load_anchors(pki.cert_pem(anchor))) == []
    other = pki.new_ca("unrelated")[1]
    found = crypto.chain_problems(pki.key_pem(key), full, [NAME],
                                  crypto.load_anchors(pki.cert_pem(other)))
    assert found == ["the chain does not end at a trusted root (last issuer "
                     "CN=old root,O=certfan lab)"], found


def test_audit_reads_certificate_files_by_argument_never_by_splicing(tmp_path: Path,
                                                                     chain: extra.Chain) -> None:
    """The file-reading script run locally: odd paths come back as themselves, keys are
    only looked for, and what is missing or unreadable says so."""
    import subprocess

    odd = tmp_path / "a dir; $(touch pwned)" / "cert 'x'.pem"
    odd.parent.mkdir()
    odd.write_bytes(chain.leaf + chain.intermediate)
    key = tmp_path / "privkey.pem"
    key.write_bytes(chain.key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    args = [f"c:{odd}", f"k:{key}", f"c:{tmp_path / 'missing.pem'}", f"c:{garbage}"]
    done = subprocess.run(["sh", "-c", audit._READ_FILES, "sh", *args], capture_output=True,
                          text=True, timeout=10, check=True, cwd=tmp_path)
    files = audit._parse_files(done.stdout)
    assert not (tmp_path / "pwned").exists()
    assert files[str(odd)].state == "file" and files[str(odd)].facts is not None
    assert files[str(odd)].facts.names == (NAME, "*.media.lab.test")
    assert files[str(key)].state == "present" and "PRIVATE" not in done.stdout
    assert files[str(tmp_path / "missing.pem")].state == "missing"
    assert files[str(garbage)].state == "unparsable"
