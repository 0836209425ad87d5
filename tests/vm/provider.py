"""The provider around a VM: the lab's router, far host and DNS server (fjord.lab's
Upstream, reused as it is), with the server's NIC a tap that QEMU opens instead of a
veth, and the provider's Debian mirror on the far host.

    far netns                      upstream netns (router)             QEMU
    eth0 198.51.100.10 ── far      server-port (tap) 192.0.2.1/27 ──── ens3 of the VM
         http: the mirror          fe80::1, the provider's MAC filter
                                   lo: DNS 192.0.2.53, 2001:db8:53::53

deb.debian.org resolves to the far host there, so the server's APT (and fjord's) talks
to the mirror exactly as it would to Debian's. Nothing here reaches beyond the two
namespaces; every process is started here and ended by its PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from fjord.lab import namespaces, netlink, provider
from fjord.lab.names import ROUTER_MAC, Names, netns_path
from fjord.lab.spec import FAR_IPV4, LabSpec
from fjord.lab.upstream import Upstream

MIRROR_NAMES = ("deb.debian.org", "security.debian.org")


class Provider:
    """The network namespaces and daemons of one VM's provider."""

    def __init__(self, names: Names, spec: LabSpec, workdir: Path) -> None:
        self.names = names
        self.spec = spec
        self.dir = workdir
        self.upstream = Upstream(names, spec)
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def tap(self) -> str:
        return provider.ROUTER_PORT

    def nsenter(self, part: str, argv: list[str]) -> list[str]:
        netns = self.names.netns_upstream if part == "upstream" else self.names.netns_far
        return ["nsenter", f"--net={netns_path(netns)}", *argv]

    def create(self, mirror: Path) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for ns in (self.names.netns_upstream, self.names.netns_far):
            if namespaces.exists(ns):
                namespaces.remove(ns)
            namespaces.create(ns)
        self.upstream.dir = self.dir / "upstream"
        self.upstream.create()
        # A tap is made with an ioctl in the caller's own namespace: made by `ip` run
        # inside the upstream namespace, never in the machine's.
        subprocess.run(self.nsenter("upstream", ["ip", "tuntap", "add", "dev", self.tap,
                                                 "mode", "tap"]), check=True, timeout=10)
        with netlink.rtnl(self.names.netns_upstream) as ipr:
            port = netlink.index(ipr, self.tap)
            ipr.link("set", index=port, address=ROUTER_MAC)
            netlink.add_address(ipr, port, self.spec.router_ipv4)
            if self.spec.router_ipv6 is not None:
                netlink.add_address(ipr, port, self.spec.router_ipv6)
            netlink.up(ipr, self.tap)
        self.upstream.apply_provider(self.spec.provider)
        self._start_dns()
        self._start_mirror(mirror)

    def _spawn(self, part: str, argv: list[str], log: str) -> None:
        with open(self.dir / log, "ab") as out:
            proc = subprocess.Popen(self.nsenter(part, argv), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)

    def _start_dns(self) -> None:
        argv = [a for a in self.upstream.dnsmasq_argv() if not a.startswith("--pid-file")]
        argv += ["--keep-in-foreground", f"--pid-file={self.dir / 'dnsmasq.pid'}"]
        argv += [f"--host-record={name},{FAR_IPV4.ip}" for name in MIRROR_NAMES]
        self._spawn("upstream", argv, "dnsmasq.out")

    def _start_mirror(self, mirror: Path) -> None:
        # Python's own HTTP server: a plain static mirror, like any Debian mirror.
        self._spawn("far", ["python3", "-m", "http.server", "80", "--bind", str(FAR_IPV4.ip),
                            "--directory", str(mirror)], "mirror.log")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            probe = subprocess.run(self.nsenter("far", [
                "python3", "-c", "import socket,sys; socket.create_connection("
                f"('{FAR_IPV4.ip}', 80), 1)"]), capture_output=True, check=False)
            if probe.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("the provider's mirror did not start")

    def foreign_macs(self) -> int:
        return self.upstream.counter().packets

    def destroy(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
        self.procs.clear()
        for ns in (self.names.netns_upstream, self.names.netns_far):
            if namespaces.exists(ns):
                namespaces.remove(ns)
