"""The certfan test lab: Pebble, BIND9 and SSH/nginx edge nodes on one machine.

    from certfan_lab import Lab

    with Lab() as lab:                 # root only; see Lab for the knobs
        lab.config_path                # a certfan config for this lab
        with lab.faults.cut("sally"):
            ...

``python -m certfan_lab up`` runs one in the foreground; ``python -m
certfan_lab down`` clears what a crashed one left. Nothing here talks to
anything but this machine: 127.0.0.1 and the lab's own network namespaces.
"""

from __future__ import annotations

from certfan_lab.core import DEFAULT_DIR, DEFAULT_NODES, DIR_ENV, Lab, preflight
from certfan_lab.faults import Fault, Faults
from certfan_lab.nodes import Node
from certfan_lab.procs import LabError

__all__ = [
    "DEFAULT_DIR",
    "DEFAULT_NODES",
    "DIR_ENV",
    "Fault",
    "Faults",
    "Lab",
    "LabError",
    "Node",
    "preflight",
]
