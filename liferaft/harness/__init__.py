"""Real processes under a harness: start N ``liferaft serve`` nodes, watch
them, kill them by PID, and clean up on every exit path.

* :mod:`.procs`: :class:`ProcessGroup`, the registry of one harness's
  children (any command: nodes, etcd, py-spy, bench clients);
* :mod:`.serve`: :class:`ServeCluster`, N ``liferaft serve`` nodes by id;
* :mod:`.ports`: free ports on 127.0.0.1;
* :mod:`.pidfile`: the registry ``cluster up`` leaves for ``cluster down``.

Used by ``liferaft cluster up/down``, the fault harness (``chaos``), the
system tests and the benchmarks (docs/architecture.md, "Layers").
"""

from .ports import HOST, free_base_port, free_port, free_ports
from .procs import Child, ProcessGroup, pid_alive, rss_bytes, tail
from .serve import ServeCluster, ServeNode, wait_http_ok

__all__ = [
    "HOST",
    "Child",
    "ProcessGroup",
    "ServeCluster",
    "ServeNode",
    "free_base_port",
    "free_port",
    "free_ports",
    "pid_alive",
    "rss_bytes",
    "tail",
    "wait_http_ok",
]
