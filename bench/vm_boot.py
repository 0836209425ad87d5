#!/usr/bin/env python3
"""How long a real Debian server of the VM tier takes to boot and to reboot (root only).

    .venv/bin/python bench/vm_boot.py [--suite bookworm|trixie] [-n 3] [--accel tcg|kvm]

Boots the VM tier's server disk (tests/vm: built and cached on first use) at its
simulated provider, without fjord: the seconds from QEMU's start until the server
answers SSH, then N real reboots (`systemctl reboot`) and the seconds from the
command until SSH answers with a new boot ID. Prints JSON on stdout: the accelerator
(TCG here, where /dev/kvm is a PVM module that cannot run Debian's kernel; KVM where
it really boots), the machine's load at the start, and the figures. No targets: under
full emulation these are upper bounds for a real server, and they tell how long the
VM tier's scenario waits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests" / "vm"))
sys.path.insert(0, str(REPO / "bench"))

import guest  # noqa: E402
from common import figure, log  # noqa: E402
from machine import Machine  # noqa: E402
from provider import Provider  # noqa: E402

from fjord.config.desired import load  # noqa: E402
from fjord.lab.names import Names  # noqa: E402
from fjord.lab.spec import from_host  # noqa: E402


def measure(suite: str, n: int) -> dict[str, object]:
    desired = load(str(REPO / "tests" / "vm" / "server.yaml"))
    names = Names(f"bvm{guest.RELEASES[suite]}-{os.getpid() % 10000}")
    spec = from_host(names.lab, desired.host, "routed")
    log(f"the Debian {guest.RELEASES[suite]} disk (built on first use)")
    disk = guest.disk(suite, spec)
    with tempfile.TemporaryDirectory(prefix="fjord-bench-vm-") as tmp:
        provider = Provider(names, spec, Path(tmp) / "provider")
        vm = Machine(disk, Path(tmp) / "machine", names.netns_upstream, spec.mac,
                     str(spec.ipv4_interface.ip))
        try:
            provider.create(disk.mirror)
            load1 = os.getloadavg()[0]
            vm.start(provider.tap)
            first = vm.wait_ssh()
            log(f"first boot: SSH after {first:.1f} s ({vm.accel})")
            reboots = []
            for i in range(n):
                reboots.append(vm.reboot())
                log(f"reboot {i + 1}: SSH after {reboots[-1]:.1f} s")
        finally:
            vm.stop()
            provider.destroy()
    return {
        "suite": suite, "release": guest.RELEASES[suite], "accel": vm.accel,
        "cpus": os.cpu_count(), "load_at_start": round(load1, 2),
        "first_boot": figure([first], "s", note="QEMU start to SSH"),
        "reboot": figure(reboots, "s", note="systemctl reboot to SSH with a new boot ID"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="trixie", choices=sorted(guest.RELEASES))
    parser.add_argument("-n", type=int, default=3, help="reboots (default 3)")
    parser.add_argument("--accel", choices=("tcg", "kvm"),
                        help="force an accelerator (default: KVM only where it boots)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/vm_boot.py needs root", file=sys.stderr)
        return 1
    if args.accel:
        os.environ["FJORD_VM_ACCEL"] = args.accel
    print(json.dumps(measure(args.suite, args.n), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
