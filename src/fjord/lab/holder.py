"""The holder of a lab server's namespaces: `python -m fjord.lab.holder LAB HOSTNAME`
(HOSTNAME: when the server's /etc/hostname names none).

It joins the lab's ``server`` cgroup, unshares a mount, cgroup and UTS namespace,
enters the server's network namespace, builds the lab's filesystem (fjord.lab.mounts),
then leaves behind a child that only sleeps: that child keeps the namespaces alive,
and everything that later runs "on the server" enters them through its PID. Its PID
is printed on stdout; it runs as ``fjord-lab-LAB infinity`` in `ps`.

Nothing here touches the machine's own mount namespace: every mount happens after
the unshare, in a namespace whose propagation is private.
"""

from __future__ import annotations

import os
import socket
import sys

from fjord.lab import mounts
from fjord.lab import syscalls as sc
from fjord.lab.cgroups import LabCgroup
from fjord.lab.names import Names, labs_dir, netns_path


def hold(lab: str, hostname: str) -> int:
    names = Names(lab)
    layout = mounts.LabLayout(names.dir)
    if any(c in str(layout.dir) for c in ",:\\"):  # they would break overlay's options
        raise ValueError(f"{layout.dir}: a lab directory's path cannot contain , : or \\")
    cgroup = LabCgroup(names.cgroup)
    hierarchies = cgroup.hierarchies
    cgroup.join(os.getpid(), "server")
    net = os.open(netns_path(names.netns_server), os.O_RDONLY | os.O_CLOEXEC)
    sc.unshare(sc.CLONE_NEWNS | sc.CLONE_NEWCGROUP | sc.CLONE_NEWUTS)
    sc.setns(net, sc.CLONE_NEWNET)
    os.close(net)
    mounts.build(layout, hierarchies, labs_dir())
    os.chdir("/")
    socket.sethostname(_persisted_hostname() or hostname)

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only becomes `sleep`
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, 1 << 16)
        os.execv("/bin/sleep", [f"fjord-lab-{lab}", "infinity"])
    return pid


def _persisted_hostname() -> str | None:
    """The server's /etc/hostname (now its own), as systemd reads it at boot."""
    try:
        with open("/etc/hostname", encoding="utf-8") as fh:
            first = fh.read().split()
    except OSError:
        return None
    return first[0] if first and len(first[0]) <= 64 else None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m fjord.lab.holder LAB HOSTNAME", file=sys.stderr)
        return 2
    try:
        pid = hold(argv[0], argv[1])
    except Exception as exc:  # report, and let this process (and its namespaces) go
        print(f"fjord lab holder: {exc}", file=sys.stderr)
        return 1
    print(pid, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
