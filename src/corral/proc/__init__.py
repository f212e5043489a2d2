"""corral.proc: the supervision core shared by the sitter and the launcher.

Spawn an argv in its own session, capture its output, probe it, restart it per policy, adopt it
after our own restart (PID file identity), and stop it with its whole process tree. No HTTP
server here. See docs/supervision.md.
"""

from corral.proc.events import State, StateEvent
from corral.proc.spec import Probe, ProcessSpec, RestartPolicy
from corral.proc.supervisor import Supervisor
from corral.proc.tree import kill_tree, port_holder, stop_tree

__all__ = [
    "Probe",
    "ProcessSpec",
    "RestartPolicy",
    "State",
    "StateEvent",
    "Supervisor",
    "kill_tree",
    "port_holder",
    "stop_tree",
]
