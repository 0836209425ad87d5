"""One server of the VM tier as the tests see it: the VM, its provider, its addresses."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from machine import Answer, Machine
from provider import Provider

from fjord.lab.spec import LabSpec

CONFIG = "/etc/fjord/fjord.yaml"
FJORD = "/usr/local/sbin/fjord"


@dataclass
class Server:
    suite: str
    vm: Machine
    provider: Provider
    spec: LabSpec
    config: Path        # the configuration on the test machine (copied to CONFIG)
    bundle: Path
    mac: str = ""     # the NIC's MAC, as the provider first saw it

    @property
    def ipv4(self) -> str:
        return str(self.spec.ipv4_interface.ip)

    @property
    def ipv6(self) -> str | None:
        six = self.spec.ipv6_interface
        return str(six.ip) if six else None

    def fjord(self, *args: str, timeout: float = 1200, check: bool = True) -> Answer:
        return self.vm.ssh([FJORD, *args], timeout=timeout, check=check)

    def upstream(self, argv: list[str], timeout: float = 60,
                 ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.provider.nsenter("upstream", argv), capture_output=True,
                              text=True, timeout=timeout, check=False)
