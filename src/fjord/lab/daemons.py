"""The simulated server's daemons: Open vSwitch (ovsdb-server, ovs-vswitchd) and libvirtd.

They run inside the lab (its mount, network, UTS and cgroup namespaces and its
``server`` cgroup), started the way Debian's units start them, with their files in
the Debian places, which inside the lab are the lab's own: the database in
/etc/openvswitch, sockets and PID files under /run, logs under /var/log. Each
``--detach``/``--daemon`` start returns once the daemon serves, so no sleeping.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from fjord.errors import FjordError
from fjord.lab.mounts import Layout
from fjord.lab.names import Names
from fjord.lab.procs import daemon_alive
from fjord.lab.upstream import enter_argv
from fjord.runner import run

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
LIBVIRTD = ["libvirtd", "--daemon"]
LIBVIRT_ENV = {"LIBVIRT_LOG_OUTPUTS": "3:file:/var/log/libvirt/libvirtd.log"}

# name -> PID file, relative to the lab's /run
PIDFILES = {
    "ovsdb-server": "openvswitch/ovsdb-server.pid",
    "ovs-vswitchd": "openvswitch/ovs-vswitchd.pid",
    "libvirtd": "libvirtd.pid",
}


@dataclass(frozen=True)
class ServerDaemons:
    names: Names
    layout: Layout

    def pid(self, daemon: str) -> int | None:
        return daemon_alive(self.layout.run / PIDFILES[daemon])

    def running(self) -> dict[str, int | None]:
        return {d: self.pid(d) for d in PIDFILES}

    def _run(self, argv: list[str], **kwargs: object) -> None:
        run(enter_argv(self.names.lab, "server", argv), timeout=60, **kwargs)  # type: ignore[arg-type]

    # --- Open vSwitch ---------------------------------------------------------------------

    def create_database(self) -> None:
        """A fresh, empty Open vSwitch database in the lab's /etc (as the package's
        postinst leaves it), unless the lab has one."""
        db = self.layout.etc_upper / "openvswitch" / "conf.db"
        if db.exists():
            return
        db.parent.mkdir(parents=True, exist_ok=True)
        run(["ovsdb-tool", "create", str(db), str(OVS_SCHEMA)], timeout=30)

    def start_ovs(self) -> None:
        if self.pid("ovsdb-server") is None:
            self._run(OVSDB_SERVER)
            self._run(["ovs-vsctl", "--no-wait", "init"])
        if self.pid("ovs-vswitchd") is None:
            self._run(OVS_VSWITCHD)

    # --- libvirt --------------------------------------------------------------------------

    def start_libvirtd(self, timeout: float = 30.0) -> None:
        if self.pid("libvirtd") is None:
            self._run(LIBVIRTD, env=LIBVIRT_ENV)
        self.wait_libvirt(timeout)

    @property
    def libvirt_uri(self) -> str:
        """The lab's libvirt LXC driver, reached from the machine through its socket."""
        return f"lxc:///system?socket={self.layout.run}/libvirt/libvirt-sock"

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
        raise FjordError(f"libvirtd in lab {self.names.lab} does not answer: {last}",
                         hint=f"see {self.layout.dir}/var/log/libvirt/libvirtd.log")
