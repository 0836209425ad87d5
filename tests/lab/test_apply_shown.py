"""Apply at a terminal runs the plan it showed (issue 17 item 3): a first apply of a
fresh server, answered at a terminal, is not refused (its later resources change
because earlier ones did: packages, files, restarts, rootfs then domain); a host
changed while the question waits is refused with what differs, and nothing changes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from faults import EXAMPLE, FJORD, at_a_terminal, build_images, fjord, plan

from fjord.lab import Lab

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]


def test_apply_runs_the_plan_it_showed(make_lab: Callable[..., Lab], tmp_path: Path) -> None:
    config = tmp_path / "shown.yaml"
    config.write_text(Path(EXAMPLE).read_text().replace(
        "host:\n", "host:\n  sysctl:\n    net.core.somaxconn: 3072\n", 1))
    build_images(config.read_text())
    lab = make_lab()

    def apply_at_terminal(before: Callable[[], None] = lambda: None) -> tuple[int, str]:
        return at_a_terminal(lab.exec_argv([*FJORD, "apply", "-c", str(config)]), "y",
                             before)

    code, shown = apply_at_terminal()
    assert code == 0, shown
    assert "Applied" in shown and "host changed" not in shown
    assert plan(lab, str(config), ("host", "network", "containers"))["changes"] == []

    # the file asks for more; while the question waits, someone changes the same key
    config.write_text(config.read_text().replace("somaxconn: 3072", "somaxconn: 2048"))
    code, shown = apply_at_terminal(
        lambda: lab.exec(["sysctl", "-w", "net.core.somaxconn=1234"]))
    assert code == 1, shown
    flat = " ".join(shown.split())
    assert ("the host changed since the plan was shown: sysctl net.core.somaxconn: shown: "
            "update net.core.somaxconn = 2048 (declared in host.sysctl; is 3072); now: "
            "update net.core.somaxconn = 2048 (declared in host.sysctl; is 1234); nothing "
            "was changed; run fjord plan again") in flat, shown
    assert lab.exec(["sysctl", "-n", "net.core.somaxconn"]).stdout.strip() == "1234"
    assert "net.core.somaxconn = 3072" in lab.exec(
        ["cat", "/etc/sysctl.d/60-fjord.conf"]).stdout  # the file was not written either

    code, shown = apply_at_terminal()
    assert code == 0, shown
    assert lab.exec(["sysctl", "-n", "net.core.somaxconn"]).stdout.strip() == "2048"

    # a saved plan: applied as it was saved, refused when the host or the file changed
    saved = tmp_path / "plan.json"
    config.write_text(config.read_text().replace("somaxconn: 2048", "somaxconn: 1024"))
    fjord(lab, "plan", "-c", str(config), "--out", str(saved))
    lab.exec(["sysctl", "-w", "net.core.somaxconn=999"])
    stale = fjord(lab, "apply", "-c", str(config), str(saved), check=False)
    assert stale.returncode == 1, stale.stderr
    assert "the host changed since the plan was shown: sysctl net.core.somaxconn" in \
        " ".join(stale.stderr.split())
    assert lab.exec(["sysctl", "-n", "net.core.somaxconn"]).stdout.strip() == "999"
    fjord(lab, "plan", "-c", str(config), "--out", str(saved))
    done = fjord(lab, "apply", "-c", str(config), str(saved), "--json")
    assert [c["resource"] for c in json.loads(done.stdout)["changes"]] == [
        "file /etc/sysctl.d/60-fjord.conf", "sysctl net.core.somaxconn"]
    assert lab.exec(["sysctl", "-n", "net.core.somaxconn"]).stdout.strip() == "1024"
    config.write_text(config.read_text() + "# edited\n")
    edited = fjord(lab, "apply", "-c", str(config), str(saved), check=False)
    assert edited.returncode == 1
    assert "the configuration changed since the plan was saved" in edited.stderr
