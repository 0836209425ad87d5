"""Generated configurations in the lab (issue 15 item 2).

For each configuration of tests/lab/configgen.py: a lab with its host section and
provider; `fjord apply` succeeds and a second apply changes nothing; `fjord check` is
green; after `lab reboot` check is green without an apply and the plan is empty; then
one day-2 change (a container added, one removed with --prune, limits, forwards or
resolvers changed) converges: apply, a second apply empty, check green.

CI runs one configuration per combination of provider x IPv6 mode x switch kind the
lab can simulate (14), seeds fixed. ``FJORD_FULL_CONFIGS=N`` runs N configurations
instead, seeds ``FJORD_CONFIG_SEED`` (default 1000) onwards, any shape; a failure
names its seed, and ``FJORD_CONFIG_SEED=S FJORD_FULL_CONFIGS=1`` replays it.
Figures go to FJORD_RELIABILITY_REPORT ("generated configs").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from configgen import COMBINATIONS, Generated, generate, mutate
from faults import fjord, record

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
FULL = int(os.environ.get("FJORD_FULL_CONFIGS") or 0)
FIRST_SEED = int(os.environ.get("FJORD_CONFIG_SEED") or 1000)


def ci_sample() -> list[Generated]:
    """One configuration per combination, with one or two containers (the slow part; a
    few with none, which the day-2 change may add to), so that CI stays within minutes."""
    return [generate(100 + i, *combo, containers=(0, 0) if i % 5 == 4 else (1, 2))
            for i, combo in enumerate(COMBINATIONS)]


def full_sample() -> list[Generated]:
    return [generate(seed) for seed in range(FIRST_SEED, FIRST_SEED + FULL)]


CASES = full_sample() if FULL else ci_sample()


def build_images(path: Path) -> None:
    """The images the file's containers need, built on the machine into the labs' cache
    (a lab has no Internet); cached ones cost nothing."""
    out = subprocess.run([sys.executable, "-m", "fjord", "image", "build", "-c", str(path),
                          "--for-labs"], cwd=REPO, capture_output=True, text=True,
                         timeout=1800)
    assert out.returncode == 0, out.stdout + out.stderr


def machine_lacks(package: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True,
                         text=True, check=False)
    return out.stdout.strip() != "install ok installed"


def can_boot(gen: Generated) -> str | None:
    """Why the lab cannot replay this configuration's boot, or None. The lab shares /usr
    with the machine: fjord's simulated install of bridge-utils (linux-bridge) brings no
    ifupdown hook, so `ifup` cannot make the bridges unless the machine has it
    (scripts/setup installs it). CI must have it; locally the reboot is left out."""
    if gen.switch == "linux-bridge" and machine_lacks("bridge-utils"):
        why = "the machine lacks bridge-utils: the lab cannot boot Linux bridges"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why + " (scripts/setup installs it)")
        return why
    return None


def changes(lab, *extra: str) -> list[dict]:
    return json.loads(fjord(lab, "apply", "--yes", "--json", *extra).stdout)["changes"]


def assert_green(lab, when: str) -> None:
    out = fjord(lab, "check", "--json", check=False)
    try:
        results = json.loads(out.stdout)["checks"]
    except (ValueError, KeyError):
        raise AssertionError(f"{when}: fjord check gave no JSON:\n{out.stdout}\n{out.stderr}"
                             ) from None
    failed = {c["name"]: c["detail"] for c in results if not c["ok"]}
    assert not failed, f"{when}: fjord check failed: {failed}"
    assert out.returncode == 0, f"{when}: fjord check exited {out.returncode}: {out.stderr}"


@pytest.mark.parametrize("gen", CASES, ids=lambda g: f"seed{g.seed}-" + "-".join(g.combination))
def test_generated_configuration(gen: Generated, make_lab, tmp_path: Path) -> None:
    start = time.monotonic()
    print(gen.describe())
    step = "lab up"
    try:
        source = tmp_path / "generated.yaml"
        source.write_text(gen.text())
        build_images(source)
        lab = make_lab(provider=gen.provider, config=str(source))
        lab.exec(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                  "/root/.ssh/id_ed25519"])
        key = lab.exec(["cat", "/root/.ssh/id_ed25519.pub"]).stdout.strip()

        def configure(text: str) -> None:
            lab.exec(["install", "-D", "-m", "0644", "/dev/stdin", "/etc/fjord/fjord.yaml"],
                     input=text)

        configure(gen.text(key))
        step = "first apply"
        changes(lab)
        step = "second apply"
        again = changes(lab)
        assert again == [], f"second apply changed {again}"
        step = "check after apply"
        assert_green(lab, step)
        step = "reboot"
        no_boot = can_boot(gen)
        if no_boot is None:
            report = lab.reboot()
            failed_steps = [s for s in report.to_json()["steps"] if not s["ok"]]
            assert report.ok, f"lab reboot failed: {failed_steps}"
            step = "check after reboot"
            assert_green(lab, step)
            plan = json.loads(fjord(lab, "plan", "--json").stdout)["changes"]
            assert plan == [], f"planned after reboot: {plan}"
        else:
            print(f"reboot left out: {no_boot}")
        change = mutate(gen, gen.seed)
        step = f"day 2: {change.kind} ({change.detail})"
        print(step)
        day2 = Generated(gen.seed, gen.provider, change.data)
        build_images_for = tmp_path / "day2.yaml"
        build_images_for.write_text(day2.text())
        build_images(build_images_for)
        configure(day2.text(key))
        changes(lab, *(["--prune"] if change.prune else []))
        again = changes(lab)
        assert again == [], f"second apply after the change: {again}"
        assert_green(lab, step)
    except BaseException as exc:
        record("generated configs", seed=gen.seed, combination=list(gen.combination),
               step=step, failed=(str(exc) or repr(exc))[:3000],
               minutes=round((time.monotonic() - start) / 60, 2))
        print(f"FAILED at {step}; replay: FJORD_CONFIG_SEED={gen.seed} FJORD_FULL_CONFIGS=1"
              f"\n{gen.text()}")
        raise
    record("generated configs", seed=gen.seed, combination=list(gen.combination),
           step="passed" if can_boot(gen) is None else "passed (no reboot)",
           minutes=round((time.monotonic() - start) / 60, 2))
