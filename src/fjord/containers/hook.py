"""libvirt's LXC hook: mount an overlay container's root before libvirt starts it.

libvirt runs ``/etc/libvirt/hooks/lxc.d/*`` (libvirt >= 6.5) with ``NAME OPERATION
SUB-OPERATION EXTRA`` and the domain XML on stdin, before and after every start and
stop of every LXC domain, in its own mount namespace (the host's, or the lab's). On
``prepare begin`` fjord mounts the overlay of a container it made; every other call,
and every domain fjord did not make, is left alone. A non-zero exit stops the start,
with the message in libvirt's error, which is what an unmountable root should do.

The script (:func:`hook_script`, from ``fjord/containers/guest/lxc-hook.sh``) is a
POSIX shell script: libvirt waits for it at every start and stop, so it answers alone
for domains fjord did not make and for the moments fjord does not act on, and for an
overlay already mounted (what `fjord apply` does before it starts a container); only
the rest starts Python and :func:`main`.

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
    waits for the hook at every start and stop, so its cost is the containers'.

    The hook's entry point: the script below tells it fjord's state directory (and the
    offload switch) in its environment, read here and nowhere else."""
    import os

    state = os.environ.get("FJORD_STATE_DIR") or "/var/lib/fjord"
    offload_off = os.environ.get(OFFLOAD_ENV) == "1"
    if len(argv) < 3 or not _ours(state, argv[0]):
        return 0
    # what fjord's modules below read (fjord.state, the containers' paths)
    from fjord import environment

    environment.use(environment.Environment(state_dir=Path(state)))
    name, op = argv[0], (argv[1], argv[2])
    if op == ("prepare", "begin"):
        return _prepare(name)
    if op == ("start", "begin"):
        # the container's new port is on the bridge, its init not started yet: guard
        # the port before the container can send anything (fail closed)
        return _guard(state, name, "start")
    if op == ("started", "begin"):
        return _started(state, name, offload_off)
    if op == ("release", "end"):
        # empty cgroups fjord-init made in hierarchies libvirt does not manage
        from fjord.containers.limits import release

        release(name)
        _guard(state, name, "stop")  # the port is gone: its flows go too
    return 0


def _guard(state: str, name: str, when: str) -> int:
    """Rebuild the internal bridge's anti-spoofing flows for the ports there are now
    (libvirt gave the container's port a new name and OpenFlow number)."""
    from fjord.errors import FjordError
    from fjord.net.portguard import GuardError, rebuild

    try:
        rebuild(Path(state))
    except (GuardError, FjordError, OSError) as exc:
        print(f"fjord: container {name}: cannot set the anti-spoofing flows at its "
              f"{when}: {exc}", file=sys.stderr)
        return 1
    return 0


def _ours(state: str, name: str) -> bool:
    """Did fjord make this container? (It has a directory in fjord's state.)"""
    import os

    return "/" not in name and os.path.isdir(os.path.join(state, "containers", name))


def _delegate(state: str, name: str) -> int:
    import json
    import os

    try:
        with open(os.path.join(state, "containers", name, "container.json")) as fh:
            owner = json.load(fh).get("idmap")
    except (OSError, ValueError, AttributeError):
        return 0
    if not isinstance(owner, int):
        return 0
    from fjord.containers.limits import delegate

    try:
        delegate(name, owner)
    except OSError as exc:
        print(f"fjord: container {name}: cannot delegate its cgroups: {exc}", file=sys.stderr)
        return 1
    return 0


def _prepare(name: str) -> int:
    from fjord.containers.rootfs import ensure_mounted
    from fjord.errors import FjordError

    try:
        ensure_mounted(name)
    except FjordError as exc:
        print(f"fjord: cannot mount the root of container {name}: {exc}", file=sys.stderr)
        return 1
    return 0


def _started(state: str, name: str, offload_off: bool) -> int:
    """After every start (autostart at boot included): an unprivileged container's root
    gets its cgroups (fjord.containers.limits.delegate); on the userspace datapath, the
    container's interfaces must compute their checksums (see fjord.containers.offload).
    Standard library only: this runs while libvirt waits."""
    rc = _delegate(state, name)
    if not offload_off:
        return rc
    import time

    from fjord.containers.offload import OffloadError, init_pid, tx_checksum_off

    # an unprivileged container's init may be a moment behind libvirt's "started"
    deadline = time.monotonic() + 5.0
    pid = init_pid(name)
    while pid is None and time.monotonic() < deadline:
        time.sleep(0.05)
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


# libvirt waits for the hook: it leaves at once, without the interpreter's clean-up of
# every module (about 10 ms), once what it printed is out
_MAIN = ("import sys; from fjord.containers.hook import main, leave; "
         "leave(main(sys.argv[1:]))")


def leave(rc: int) -> None:
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def hook_script(python: str | None = None, state: Path | None = None,
                offload_off: bool = False) -> str:
    """The hook's content: a POSIX shell script that hands fjord's containers, at the
    three moments it acts on, to :func:`main` in this fjord's Python with its state
    directory (libvirtd's environment has neither fjord's virtualenv nor
    FJORD_STATE_DIR). Every value is shell-quoted."""
    from fjord.containers import guest
    from fjord.state import state_dir

    return guest.render(
        "lxc-hook.sh",
        what=" and turns checksum offload off after every start" if offload_off else "",
        state=guest.shell_word(str(state or state_dir())),
        started=":" if offload_off else "exit 0",
        offload=f" {OFFLOAD_ENV}=1" if offload_off else "",
        python=guest.shell_word(python or sys.executable),
        code=guest.shell_word(_MAIN))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
