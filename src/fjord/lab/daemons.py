"""The simulated server's daemons: Open vSwitch (ovsdb-server, ovs-vswitchd), lxcfs and
libvirtd.

They run inside the lab (its mount, network, UTS and cgroup namespaces and its
``server`` cgroup), started the way Debian's units start them, with their files in
the Debian places, which inside the lab are the lab's own: the database in
/etc/openvswitch, sockets and PID files under /run, logs under /var/log. Each
``--detach``/``--daemon`` start returns once the daemon serves, so no sleeping.

The same ServerDaemons works from the machine (`lab up`, `lab reboot`: commands go
through the enter helper) and from inside the lab (the lab's service manager, which
fjord uses there instead of systemd).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fjord.errors import FjordError
from fjord.lab.procs import daemon_alive, start_time

OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
OVS_DB = "/etc/openvswitch/conf.db"
OVS_DB_SOCKET = "/var/run/openvswitch/db.sock"  # /var/run -> /run: the lab's /run

OVSDB_SERVER = [
    "ovsdb-server", OVS_DB,
    "-vconsole:emer", "-vsyslog:off", "-vfile:info",
    f"--remote=punix:{OVS_DB_SOCKET}",
    "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
    "--private-key=db:Open_vSwitch,SSL,private_key",
    "--certificate=db:Open_vSwitch,SSL,certificate",
    "--bootstrap-ca-cert=db:Open_vSwitch,SSL,ca_cert",
    "--no-chdir", "--log-file=/var/log/openvswitch/ovsdb-server.log",
    "--pidfile=/var/run/openvswitch/ovsdb-server.pid", "--detach",
]
OVS_VSWITCHD = [
    "ovs-vswitchd", f"unix:{OVS_DB_SOCKET}",
    "-vconsole:emer", "-vsyslog:off", "-vfile:info",
    "--no-chdir", "--log-file=/var/log/openvswitch/ovs-vswitchd.log",
    "--pidfile=/var/run/openvswitch/ovs-vswitchd.pid", "--detach",
]
# Without /etc/default/libvirtd's LIBVIRTD_ARGS: Debian's "--timeout 120" relies on
# systemd's socket activation to start it again, which the lab does not simulate.
LIBVIRTD = ["libvirtd", "--daemon"]
LIBVIRT_ENV = {"LIBVIRT_LOG_OUTPUTS": "3:file:/var/log/libvirt/libvirtd.log"}

# Debian's lxcfs.service runs `lxcfs /var/lib/lxcfs` in the foreground (PID file
# /run/lxcfs.pid); here start-stop-daemon puts it in the background.
LXCFS_DIR = "/var/lib/lxcfs"
LXCFS = ["start-stop-daemon", "--start", "--background", "--quiet",
         "--pidfile", "/run/lxcfs.pid", "--exec", "/usr/bin/lxcfs", "--", LXCFS_DIR]
# until its FUSE mount is there (5 s at most)
LXCFS_MOUNTED = ["sh", "-c", f"i=0; until grep -qs ' {LXCFS_DIR} fuse.lxcfs ' /proc/self/mounts;"
                 " do i=$((i + 1)); [ $i -le 100 ] || exit 1; sleep 0.05; done"]
# What lxcfs.service's ExecStopPost does (fusermount -u): a killed lxcfs leaves its mount
# point unusable (ENOTCONN) until then.
LXCFS_UNMOUNT = ["sh", "-c", f"umount -l {LXCFS_DIR} 2>/dev/null; true"]

# name -> PID file, relative to the server's /run
PIDFILES = {
    "ovsdb-server": "openvswitch/ovsdb-server.pid",
    "ovs-vswitchd": "openvswitch/ovs-vswitchd.pid",
    "lxcfs": "lxcfs.pid",
    "libvirtd": "libvirtd.pid",
}

Execute = Callable[[list[str], Mapping[str, str] | None], None]


@dataclass(frozen=True)
class ServerDaemons:
    """``run_dir``: the server's /run as the caller sees it; ``execute``: runs a command
    on the server; ``libvirt_uri``: the server's libvirtd as the caller reaches it."""

    run_dir: Path
    execute: Execute
    libvirt_uri: str = "lxc:///"
    label: str = "the lab"

    def pid(self, daemon: str) -> int | None:
        return daemon_alive(self.run_dir / PIDFILES[daemon])

    def running(self) -> dict[str, int | None]:
        return {d: self.pid(d) for d in PIDFILES}

    def started(self, daemon: str) -> float | None:
        """When ``daemon`` started, in epoch seconds (None when it is not running)."""
        pid = self.pid(daemon)
        ticks = start_time(pid) if pid is not None else None
        if ticks is None:
            return None
        return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")

    # --- Open vSwitch ---------------------------------------------------------------------

    def start_ovs(self) -> None:
        self.start_ovsdb()
        self.start_vswitchd()

    def start_ovsdb(self) -> None:
        if self.pid("ovsdb-server") is None:
            self.execute(OVSDB_SERVER, None)
            self.execute(["ovs-vsctl", "--no-wait", "init"], None)

    def start_vswitchd(self) -> None:
        if self.pid("ovs-vswitchd") is None:
            self.execute(OVS_VSWITCHD, None)

    # --- lxcfs ----------------------------------------------------------------------------

    def start_lxcfs(self) -> None:
        if self.pid("lxcfs") is None:
            self.execute(LXCFS_UNMOUNT, None)
            self.execute(LXCFS, None)
        self.execute(LXCFS_MOUNTED, None)

    # --- libvirt --------------------------------------------------------------------------

    def start_libvirtd(self, timeout: float = 30.0) -> None:
        if self.pid("libvirtd") is None:
            self.execute(LIBVIRTD, LIBVIRT_ENV)
        self.wait_libvirt(timeout)

    def wait_libvirt(self, timeout: float = 30.0) -> None:
        """Until libvirtd's LXC driver answers (it initialises after daemonising, and
        starts the autostart domains then)."""
        import libvirt

        libvirt.registerErrorHandler(lambda *_: None, None)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                conn = libvirt.open(self.libvirt_uri)
                try:
                    conn.listAllDomains()
                    return
                finally:
                    conn.close()
            except libvirt.libvirtError as exc:
                last = str(exc)
            if self.pid("libvirtd") is None:
                break
            time.sleep(0.02)
        raise FjordError(f"libvirtd in {self.label} does not answer: {last}",
                         hint="see /var/log/libvirt/libvirtd.log in the lab")

    # --- stopping -------------------------------------------------------------------------

    def stop(self, daemon: str, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        pid = self.pid(daemon)
        if pid is None:
            return
        start = start_time(pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while start_time(pid) == start and start is not None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline += timeout
            time.sleep(0.01)
        if daemon == "lxcfs":
            self.execute(LXCFS_UNMOUNT, None)


def _boot_time() -> float:
    with open("/proc/stat", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise FjordError("no boot time in /proc/stat")
