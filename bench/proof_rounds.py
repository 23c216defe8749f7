"""How often a single proof round right after a reload is wrong, with and without settling.

    sudo .venv/bin/python bench/proof_rounds.py [--nodes 50] [--runs 3]

One lab of N nodes; per mode and run, a fresh leaf is pushed to every node at
once (canary first) with a prober that records every handshake. A host's
first proof round is the first handshake of each name after its reload; it is
wrong when any of them presents the old leaf (nginx's old workers still
accepting). "settle": the remote script waits until the old workers no longer
hold the listener (the shipped rule); "no settle": it returns right after the
reload (the controller then demands two right rounds in a row). Figures only.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import threading
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from _anchors import Leaves
from _lab import bench_lab, quiet_logging

from certfan import config
from certfan.config import Endpoint
from certfan.deploy import fleet, hostrun, plan, probe
from certfan.state.store import Store
from certfan_lab import configgen

CERT = "media"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    quiet_logging()
    with bench_lab(extra_nodes=max(0, args.nodes - 4)) as lab:
        work = Path(tempfile.mkdtemp(prefix="proof-rounds-", dir=lab.dir))
        rollout = {k: None for k in configgen.sections(lab)["rollout"]}
        path = lab.write_config(
            work / "certfan.toml", state_dir=work / "state", rollout=rollout,
            groups={"bench": [n.name for n in lab.nodes[: args.nodes]]},
            certificates={CERT: {"deploy_to": ["bench"]}, "wild": None, "static": None})
        cfg = config.load(path)
        store = Store(cfg.state_dir)
        hosts = [cfg.hosts[h] for h in cfg.certificates[CERT].hosts]
        leaves = Leaves(work, cfg.certificates[CERT].domains)
        print(f"== proof rounds: {len(hosts)} nodes, {args.runs} run(s) per mode")
        for mode in ("no settle", "settle", "no settle", "settle"):
            hostrun.HostRun.settle = mode == "settle"
            for _ in range(max(1, args.runs // 2)):
                run(cfg, store, hosts, leaves, mode)


def run(cfg: config.Config, store: Store, hosts: list[config.Host], leaves: Leaves,
        mode: str) -> None:
    directory, sha = leaves.new("p")
    release = store.save(CERT, (directory / "privkey.pem").read_bytes(),
                         (directory / "fullchain.pem").read_bytes(), order_url=None,
                         key_type="ec-p256")
    store.activate(release)
    seen: dict[Endpoint, list[str]] = defaultdict(list)
    lock = threading.Lock()

    def prober(endpoint: Endpoint, sni: str, timeout: float) -> bytes:
        der = probe.served_leaf(endpoint, sni, timeout)
        with lock:
            seen[endpoint].append(hashlib.sha256(der).hexdigest())
        return der

    policy = replace(cfg.rollout, concurrency=max(64, len(hosts)))
    report = fleet.push([(release, tuple(hosts))], policy, prober=prober)
    names = len(plan.probe_snis(release.names))
    wrong = [h.name for h in hosts if any(s != sha for s in seen[h.probe][:names])]
    rounds = sum(len(seen[h.probe]) for h in hosts) / names / len(hosts)
    served = sum(1 for o in report.outcomes if o.ok)
    print(f"   {mode:<10} first round wrong on {len(wrong):2d} of {len(hosts)} hosts; "
          f"{rounds:.2f} rounds per host; {served} of {len(hosts)} proven", flush=True)


if __name__ == "__main__":
    main()
