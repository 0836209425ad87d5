"""What the lab needs from the machine, checked before anything is created."""

from __future__ import annotations

import glob
import os
import pwd
import shutil

from fjord.errors import FjordError, NotRootError
from fjord.lab.cgroups import hierarchies

# program -> Debian package that provides it
PROGRAMS = {
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "nft": "nftables",
    "dnsmasq": "dnsmasq-base",
    "ethtool": "ethtool",
    "ovsdb-tool": "openvswitch-common",
    "ovsdb-server": "openvswitch-switch",
    "ovs-vswitchd": "openvswitch-switch",
    "ovs-vsctl": "openvswitch-switch",
    "libvirtd": "libvirt-daemon-system",
    "lxcfs": "lxcfs",
    "start-stop-daemon": "dpkg",
    "ifup": "ifupdown",
    "ifquery": "ifupdown",
}
FILES = {
    "/usr/share/openvswitch/vswitch.ovsschema": "openvswitch-common",
    "/usr/lib/*/libvirt/connection-driver/libvirt_driver_lxc.so": "libvirt-daemon-driver-lxc",
}
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def check_root() -> None:
    if os.geteuid() != 0:
        raise NotRootError("fjord lab")


def check_machine() -> None:
    """Raise FjordError naming what is missing (and which package brings it)."""
    check_root()
    path = os.environ.get("PATH", "") + ":" + SBIN_PATH
    missing = {pkg for prog, pkg in PROGRAMS.items() if shutil.which(prog, path=path) is None}
    missing |= {pkg for pattern, pkg in FILES.items() if not glob.glob(pattern)}
    try:
        pwd.getpwnam("libvirt-qemu")  # libvirtd refuses to start without it
    except KeyError:
        missing.add("libvirt-daemon-system")
    if missing:
        raise FjordError(f"the lab needs these Debian packages: {' '.join(sorted(missing))}",
                         hint=f"apt-get install {' '.join(sorted(missing))} (or make setup)")
    with open("/proc/filesystems", encoding="ascii") as fh:
        if "overlay" not in fh.read().split():
            raise FjordError("the kernel has no overlay filesystem",
                             hint="modprobe overlay")
    try:
        import libvirt  # noqa: F401  (the lab waits for libvirtd through it)
    except ImportError as exc:
        raise FjordError("the Python module libvirt is missing",
                         hint="pip install libvirt-python (make setup)") from exc
    hierarchies()
