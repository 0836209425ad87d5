#!/usr/bin/env python3
"""Everything a VM-tier server needs before it boots, built natively and cached: its
configuration, the containers' image, the server disk with the provider's mirror, and
fjord's bundle for its release.

    .venv/bin/python tests/vm/prepare.py      # for $FJORD_VM_SUITES (default: both)

The tests call :func:`prepare` themselves; running this first (./scripts/test starts
it in the background while the unit and lab tests run) only moves the builds earlier.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import guest
import yaml

from fjord.config.desired import load
from fjord.lab.mounts import shared_images_dir
from fjord.lab.names import Names
from fjord.lab.spec import LabSpec, from_host

CHECKOUT = Path(__file__).resolve().parents[2]
TEMPLATE = Path(__file__).parent / "server.yaml"
SUITES = [s for s in os.environ.get("FJORD_VM_SUITES", "bookworm trixie").split() if s]
# The provider profile each release's server sits behind (fjord.lab.provider).
PROFILES = {"bookworm": "routed", "trixie": "routed"}


def server_config(suite: str, workdir: Path) -> Path:
    doc = yaml.safe_load(TEMPLATE.read_text())
    doc["host"]["apt"]["suite"] = suite
    # both hosts' container is of the default suite (trixie): on Debian 12 hosts it once
    # came up with a MAC nobody declared, udev racing libvirt (fjord.host.system.VETH_LINK)
    path = workdir / "fjord.yaml"
    path.write_text(f"# {TEMPLATE.name} for Debian {guest.RELEASES[suite]}\n"
                    + yaml.safe_dump(doc, sort_keys=False))
    return path


def container_images(config: Path) -> dict[str, Path]:
    """The containers' images, built here (the VM has no Internet), keyed by the path
    fjord looks for them on the server."""

    subprocess.run([str(CHECKOUT / ".venv/bin/fjord"), "image", "build", "--for-labs",
                    "-c", str(config)], check=True, capture_output=True, timeout=1800)
    from fjord.containers.image import spec_for

    desired = load(str(config))
    out = {}
    for c in desired.containers:
        key = spec_for(c, desired).key
        out[f"/var/lib/fjord/images/{key}"] = shared_images_dir() / key
    return out


def prepare(suite: str, workdir: Path) -> tuple[Path, Names, LabSpec, guest.Disk, Path]:
    """(configuration, names, provider spec, disk, bundle) of a server of ``suite``."""
    config = server_config(suite, workdir)
    desired = load(str(config))
    names = Names(f"vm{guest.RELEASES[suite]}-{os.getpid() % 10000}")
    spec = from_host(names.lab, desired.host, PROFILES[suite])
    disk = guest.disk(suite, spec, extras=container_images(config))
    bundle = guest.bundle(suite, CHECKOUT)
    return config, names, spec, disk, bundle


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="fjord-vm-prepare-") as tmp:
        for suite in SUITES:
            work = Path(tmp) / suite
            work.mkdir()
            _, _, _, disk, bundle = prepare(suite, work)
            guest.log(f"ready: {disk.dir.name}, {bundle.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
