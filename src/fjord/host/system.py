"""The host system layer, in the order the work is done:

    APT sources, keys, pins → apt-get update → packages → libvirt configuration
    → services (Open vSwitch; lxcfs, before libvirtd at boot; libvirtd without TCP/TLS
    listeners, restarted when its configuration changed) → the cgroup layout check
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from fjord.config.desired import Desired
from fjord.containers.resources import hook_file
from fjord.engine.change import Change
from fjord.engine.resource import Context, Reference, Resource
from fjord.host import apt, cgroups, libvirt_conf, packages
from fjord.host.boot_order import BootOrder
from fjord.host.files import File
from fjord.host.services import Service
from fjord.runner import run

ROOT = Path("/")

# The TCP and TLS listeners of a socket-activated libvirtd (Debian 12).
LIBVIRT_LISTENERS = ("libvirtd-tcp.socket", "libvirtd-tls.socket")
# libvirtd starts the autostart containers at boot; each mounts lxcfs's files when it
# starts (fjord.containers.limits), so lxcfs first. Debian's units do not order them.
LXCFS_DROP_IN = Path("etc/systemd/system/libvirtd.service.d/fjord-lxcfs.conf")
LXCFS_ORDER = ("# Managed by fjord: the containers libvirtd starts at boot mount lxcfs's "
               "files.\n[Unit]\nWants=lxcfs.service\nAfter=lxcfs.service\n")
# udev's default link policy (99-default.link: MACAddressPolicy=persistent) gives a new
# veth a MAC of its own when it reads the kernel's random one before libvirt has set the
# declared one: on Debian 12 (systemd 252) it then overwrites libvirt's, the container's
# eth0 comes up with a MAC nobody declared, and the port's anti-spoofing flows drop all
# it sends (seen after a real reboot; a lab never sees it: udev does not get the uevents
# of other network namespaces). The first matching .link file wins, so this one keeps
# udev away from every veth's MAC; whoever creates a veth sets its MAC.
VETH_LINK = Path("etc/systemd/network/10-fjord-veth.link")
VETH_LINK_POLICY = ("# Managed by fjord: udev leaves the MAC of a veth to whoever made it "
                    "(libvirt\n# sets each container's declared MAC).\n"
                    "[Match]\nDriver=veth\n\n[Link]\nMACAddressPolicy=none\n")


class MountPoint(Resource):
    """lxcfs's mount point. Every domain mounts it (fjord.containers.domain), and libvirt
    refuses to start a container whose mount source is missing: lxcfs makes it when it
    first starts, and this makes it where lxcfs never ran (it cannot start, or was
    removed), so that containers still boot without lxcfs."""

    kind = "directory"

    def __init__(self, path: Path, after: tuple[Reference, ...] = ()) -> None:
        super().__init__(str(path))
        self.path = path
        self.after = after

    def changes(self, ctx: Context) -> list[Change]:
        try:
            os.stat(self.path)
        except FileNotFoundError:
            return [Change(self.id, "create", f"mkdir {self.path} (lxcfs's mount point, "
                           "which every container mounts)",
                           lambda c: self.path.mkdir(mode=0o755, parents=True, exist_ok=True))]
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise
            # lxcfs died without unmounting (SIGKILL; Debian's ExecStopPost calls a
            # fusermount that lxcfs's dependencies do not bring): lxcfs cannot mount
            # there again, and containers read nothing from it
            return [Change(self.id, "update", f"unmount the dead FUSE mount at {self.path} "
                           "(lxcfs died without unmounting it)",
                           lambda c: run(["umount", "-l", str(self.path)], timeout=30))]
        return []

    def unchanged_reason(self, ctx: Context) -> str:
        return f"{self.path} exists"


def vswitchd_follows() -> None:
    """Until ovs-vswitchd serves the database again. When only ovsdb-server was down,
    ovs-vswitchd reconnects with a back-off of up to 8 s, and its datapath may not
    forward meanwhile (measured in a lab: the host unreachable until it reconnects). A
    transaction that waits for ovs-vswitchd (no --no-wait) returns once it caught up;
    `init` changes nothing in an initialised database."""
    run(["ovs-vsctl", "--timeout=30", "init"], timeout=40,
        hint="ovs-vswitchd does not follow its database: see /var/log/openvswitch")


def _wants_unified_cgroups(desired: Desired) -> bool:
    return desired.host.cgroups.unified


def resources(desired: Desired, root: Path = ROOT) -> list[Resource]:
    out: list[Resource] = []
    apt_resources = apt.resources(desired, root)
    update = next((r for r in apt_resources if isinstance(r, apt.AptUpdate)), None)
    out += apt_resources
    (installed,) = packages.resources(desired, lists=update,
                                      after=(update,) if update is not None else ())
    out.append(installed)

    client, daemon, defaults = libvirt_conf.files(root, after=(installed,))

    hook = hook_file(desired, root)
    hook.after = (installed,)
    out += [client, daemon, defaults, hook]


    out.append(BootOrder(root, after=(installed,)))
    out.append(Service("openvswitch-switch", reason="Open vSwitch: the bridges",
                       after=(installed,), ready=vswitchd_follows))
    order = File(root / LXCFS_DROP_IN, LXCFS_ORDER, after=(installed,),
                 reason="start lxcfs before libvirtd's containers at boot")
    out.append(order)
    from fjord.containers.limits import LXCFS_DIR

    veth_macs = File(root / VETH_LINK, VETH_LINK_POLICY, after=(installed,),
                     reason="udev keeps off the containers' MACs")
    out.append(veth_macs)
    mount_point = MountPoint(root / LXCFS_DIR.lstrip("/"), after=(installed,))
    out.append(mount_point)
    lxcfs = Service("lxcfs", reason="limit-aware /proc files for the containers",
                    after=(installed, mount_point))
    out.append(lxcfs)
    listeners = [Service(unit, enabled=False, running=False,
                         reason="libvirtd only on its UNIX sockets", after=(installed,))
                 for unit in LIBVIRT_LISTENERS]
    out += listeners
    out.append(Service(
        # libvirtd looks for hooks when it starts: a new hook means a restart too.
        "libvirtd", socket="libvirtd.socket", config=[daemon, defaults, hook],
        reason="runs the containers",
        after=(installed, daemon, defaults, order, veth_macs, mount_point, lxcfs,
               *listeners),
    ))
    out += cgroups.resources(unified=_wants_unified_cgroups(desired), root=root,
                             after=(installed,))
    return out
