"""The certfan test lab: Pebble, BIND9 and SSH/nginx edge nodes on one machine.

    from certfan.lab import Lab

    with Lab() as lab:                 # root only; see Lab for the knobs
        lab.config_path                # a certfan config for this lab
        with lab.faults.cut("sally"):
            ...

``python -m certfan.lab up`` runs one in the foreground; ``python -m
certfan.lab down`` clears what a crashed one left. Nothing here talks to
anything but this machine: 127.0.0.1 and the lab's own network namespaces.
"""

from __future__ import annotations

from certfan.lab.core import DEFAULT_DIR, DEFAULT_NODES, DIR_ENV, Lab, preflight
from certfan.lab.faults import Fault, Faults
from certfan.lab.nodes import Node
from certfan.lab.procs import LabError

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
