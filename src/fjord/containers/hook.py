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
    if len(argv) >= 3 and (argv[1], argv[2]) == ("started", "begin"):
        return _started(argv[0])
    if len(argv) >= 3 and (argv[1], argv[2]) == ("release", "end"):
        # empty cgroups fjord-init made in hierarchies libvirt does not manage
        from fjord.containers.limits import release

        release(argv[0])
        return 0
    if len(argv) < 3 or (argv[1], argv[2]) != ("prepare", "begin"):
        return 0
    from fjord.containers.rootfs import ensure_mounted
    from fjord.errors import FjordError

    try:
        ensure_mounted(argv[0])
    except FjordError as exc:
        print(f"fjord: cannot mount the root of container {argv[0]}: {exc}", file=sys.stderr)
        return 1
    return 0


def _started(name: str) -> int:
    """After every start (autostart at boot included): on the userspace datapath, the
    container's interfaces must compute their checksums (see lifecycle)."""
    import os

    if os.environ.get(OFFLOAD_ENV) != "1":
        return 0
    from fjord.containers.lifecycle import checksum_offload_off
    from fjord.errors import FjordError

    try:
        checksum_offload_off(name, ["eth0", "eth1"])
    except FjordError as exc:
        print(f"fjord: container {name}: {exc}", file=sys.stderr)
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
