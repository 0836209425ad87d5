"""Starting, stopping and destroying containers: what `fjord apply` and `fjord container`
share. Every operation is safe to repeat."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fjord.config.desired import Container, Desired
from fjord.containers import rootfs
from fjord.containers.libvirt import Libvirt, init_pid
from fjord.environment import current
from fjord.errors import FjordError
from fjord.runner import run

log = logging.getLogger("fjord.containers")

STOP_TIMEOUT = 20.0
_PORTS_LOCK = threading.Lock()


def stale_ports(desired: Desired, container: Container, ovs: Any = None) -> list[str]:
    """Open vSwitch ports left by a crashed container: ports libvirt made for this
    container's MACs whose network device no longer exists. libvirt refuses to start a
    domain whose port is still there ("could not add network device")."""
    if desired.host.switch.kind != "ovs":
        return []
    from fjord.net.links import Netlink
    from fjord.net.ovs import Ovs

    macs = {m for m in (container.mac_private, container.mac_public) if m}
    own = ovs is None
    ovs, nl = (Ovs() if own else ovs), Netlink()
    try:
        # one at a time: apply starts several containers at once, on one connection
        with _PORTS_LOCK:
            stale = []
            for row in list(ovs.api.tables["Interface"].rows.values()):
                mac = dict(row.external_ids).get("attached-mac", "").lower()
                if mac in macs and nl.link(row.name) is None:
                    stale.append(str(row.name))
            for name in stale:
                ovs.delete_port(name)
            return stale
    finally:
        if own:
            ovs.close()
        nl.close()


def checksum_offload_off(name: str, devices: Sequence[str]) -> None:
    """With Open vSwitch's userspace datapath (netdev), frames from a veth must carry
    complete checksums (see :mod:`fjord.containers.offload`); eth1 exists only with
    bridged IPv6. The libvirt hook does the same after every start (boot included)."""
    from fjord.containers.offload import OffloadError, tx_checksum_off

    pid = init_pid(name)
    if pid is None:
        raise FjordError(f"container {name} has no init process")
    try:
        tx_checksum_off(pid, devices, optional=[d for d in devices if d != "eth0"])
    except OffloadError as exc:
        raise FjordError(f"container {name}: cannot turn checksum offload off: {exc}",
                         hint="the userspace datapath needs it for TCP from the "
                         "container; see /var/log/libvirt/lxc/" + name + ".log") from exc


def start(lv: Libvirt, desired: Desired, container: Container, ovs: Any = None) -> None:
    """Start a container; ``ovs``: an open OVSDB connection to reuse (apply has one)."""
    removed = stale_ports(desired, container, ovs)
    if removed:
        log.info("removed stale Open vSwitch ports of %s: %s", container.name, removed)
    rootfs.ensure_mounted(container.name)
    lv.start(container.name)
    if desired.host.switch.kind == "ovs" and desired.host.switch.datapath == "netdev":
        devices = ["eth0"]
        if (desired.host.ipv6 is not None and desired.host.ipv6.effective_mode == "bridged"
                and container.ipv6 is not None):
            devices.append("eth1")
        checksum_offload_off(container.name, devices)


def stop(lv: Libvirt, name: str, timeout: float = STOP_TIMEOUT) -> None:
    """Ask the container's init to shut down; force it after ``timeout`` seconds."""
    state = lv.domain(name)
    if state is None or not state.running:
        return
    # Just after a start, libvirt refuses a shutdown until it knows the init's PID, and
    # under load it may not learn it for a long time (its controller's "init" event
    # came before libvirtd listened). Then fjord asks systemd itself: SIGRTMIN+4 is its
    # "power off" (systemd(1)), which is what libvirt's shutdown leads to.
    settle = time.monotonic() + 2.0
    while True:
        try:
            lv.shutdown(name)
            break
        except FjordError as exc:
            if "not yet known" not in exc.message:
                raise
            pid = init_pid(name)
            if time.monotonic() > settle and pid is not None:
                log.info("libvirt does not know the init of %s yet: powering it off "
                         "through systemd (PID %d)", name, pid)
                os.kill(pid, signal.SIGRTMIN + 4)
                break
            if time.monotonic() > settle + 3.0:
                raise
            time.sleep(0.1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = lv.domain(name)
        if state is None or not state.running:
            return
        time.sleep(0.1)
    log.warning("container %s did not stop within %.0f s: stopping it by force", name, timeout)
    kill(lv, name)


def kill(lv: Libvirt, name: str) -> None:
    """Stop at once. libvirt's own destroy sends SIGTERM to init and waits before it
    sends SIGKILL; systemd as PID 1 of a container ignores SIGTERM, so that wait is the
    ~2 s `virsh destroy` takes. Here init gets SIGKILL first, and libvirt only tidies."""
    state = lv.domain(name)
    if state is None or not state.running:
        return
    pid = init_pid(name)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.01)
    lv.destroy(name)


def destroy(lv: Libvirt, name: str) -> None:
    """Stop the container, undefine it, remove its root filesystem, free its addresses."""
    from fjord.state.allocations import forget

    kill(lv, name)
    lv.undefine(name)
    rootfs.destroy(name)
    forget([name])


@contextlib.contextmanager
def overlay_view(layout: rootfs.RootfsLayout, lower: Path) -> Iterator[Path]:
    """A read-only view of an overlay root that is not mounted (a stopped container's):
    its upper layer over its image, both as lower layers, so that nothing is written to
    either (no work directory, no copy-up). Unmounted and removed on leaving."""
    rootfs.overlay_options(layout, lower)  # refuses paths overlayfs cannot take
    if not (lower / "sbin").exists() and not (lower / "usr/sbin").exists():
        raise FjordError(f"image {lower} of container {layout.name} is missing",
                         hint="it was pruned or removed by hand; recreate the container")
    view = Path(tempfile.mkdtemp(prefix=f"fjord-view-{layout.name}-"))
    try:
        run(["mount", "-t", "overlay", f"fjord-view-{layout.name}", "-o",
             f"ro,lowerdir={layout.upper}:{lower}", str(view)], timeout=60)
        try:
            yield view
        finally:
            run(["umount", str(view)], timeout=60)
    finally:
        with contextlib.suppress(OSError):
            view.rmdir()


def container_env(tty: bool = False) -> dict[str, str]:
    """The whole environment of a command run in a container from the host: nothing of
    the operator's (SSH_AUTH_SOCK, proxies, tokens) but the terminal's type."""
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "TERM": current().term if tty else "dumb", "HOME": "/root",
            "LANG": "C.UTF-8"}
