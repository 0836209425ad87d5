"""libvirt's LXC hook: mount an overlay container's root before libvirt starts it.

libvirt runs ``/etc/libvirt/hooks/lxc.d/*`` (libvirt >= 6.5) with ``NAME OPERATION
SUB-OPERATION EXTRA`` and the domain XML on stdin, before and after every start and
stop of every LXC domain, in its own mount namespace (the host's, or the lab's). On
``prepare begin`` fjord mounts the overlay of a container it made; every other call,
and every domain fjord did not make, is left alone. A non-zero exit stops the start,
with the message in libvirt's error, which is what an unmountable root should do.

The script must exist before libvirtd starts (libvirtd looks for hooks when it
starts; restart it after installing the hook the first time).
"""

from __future__ import annotations

import sys
from pathlib import Path

HOOK_PATH = Path("/etc/libvirt/hooks/lxc.d/50-fjord")


OFFLOAD_ENV = "FJORD_CHECKSUM_OFFLOAD_OFF"


def main(argv: list[str]) -> int:
    """Act on fjord's own containers only, importing as little as possible: libvirt
    waits for the hook at every start and stop, so its cost is the containers'."""
    if len(argv) < 3 or not _ours(argv[0]):
        return 0
    name, op = argv[0], (argv[1], argv[2])
    if op == ("prepare", "begin"):
        return _prepare(name)
    if op == ("started", "begin"):
        return _started(name)
    if op == ("release", "end"):
        # empty cgroups fjord-init made in hierarchies libvirt does not manage
        from fjord.containers.limits import release

        release(name)
    return 0


def _ours(name: str) -> bool:
    """Did fjord make this container? (It has a directory in fjord's state.)"""
    import os

    state = os.environ.get("FJORD_STATE_DIR") or "/var/lib/fjord"
    return "/" not in name and os.path.isdir(os.path.join(state, "containers", name))


def _prepare(name: str) -> int:
    from fjord.containers.rootfs import ensure_mounted
    from fjord.errors import FjordError

    try:
        ensure_mounted(name)
    except FjordError as exc:
        print(f"fjord: cannot mount the root of container {name}: {exc}", file=sys.stderr)
        return 1
    return 0


def _started(name: str) -> int:
    """After every start (autostart at boot included): on the userspace datapath, the
    container's interfaces must compute their checksums (see fjord.containers.offload).
    Standard library only: this runs while libvirt waits."""
    import os

    if os.environ.get(OFFLOAD_ENV) != "1":
        return 0
    from fjord.containers.offload import OffloadError, init_pid, tx_checksum_off

    pid = init_pid(name)
    try:
        if pid is None:
            raise OffloadError(f"libvirt names no init process for {name}")
        tx_checksum_off(pid, ["eth0", "eth1"], optional=["eth1"])
    except OffloadError as exc:
        print(f"fjord: container {name}: cannot turn checksum offload off: {exc}",
              file=sys.stderr)
        return 1
    return 0


def hook_script(python: str | None = None, state: Path | None = None,
                offload_off: bool = False) -> str:
    """The hook's content: this fjord's Python, and its state directory fixed, because
    libvirtd's environment has neither fjord's virtualenv nor FJORD_STATE_DIR."""
    from fjord.state import state_dir

    python = python or sys.executable
    state = state or state_dir()
    return (
        f"#!{python}\n"
        "# Written by fjord: mounts the overlay root of a fjord container before libvirt\n"
        "# starts it (at boot too). See fjord/containers/hook.py.\n"
        "import os\n"
        "import sys\n"
        f"os.environ.setdefault('FJORD_STATE_DIR', {str(state)!r})\n"
        + (f"os.environ.setdefault({OFFLOAD_ENV!r}, '1')\n" if offload_off else "") +
        "from fjord.containers.hook import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
