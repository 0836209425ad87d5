"""`fjord image list|prune|build` on a fake cache (no root, no mmdebstrap)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner
from told import tell

from fjord.commands.image import image
from fjord.containers import image as im

CONFIG = """\
version: 1
host:
  fqdn: oslo.example.net
  ipv4: {address: 192.0.2.5/27, gateway: 192.0.2.1}
  dns: [192.0.2.53]
containers:
  web: {packages: [nginx]}
  db: {packages: [nginx]}
"""


def fake_image(state: Path, key: str, packages: list[str]) -> None:
    path = state / "images" / key
    (path / "rootfs").mkdir(parents=True)
    meta = {"key": key, "size": 2_000_000, "created": time.time() - 7200,
            "inputs": {"suite": "bookworm", "packages": [*im.BASE_PACKAGES, *packages]}}
    (path / "meta.json").write_text(json.dumps(meta))


def record(state: Path, name: str, key: str) -> None:
    d = state / "containers" / name
    d.mkdir(parents=True)
    (d / "container.json").write_text(json.dumps(
        {"name": name, "mode": "overlay", "image": key, "lower": "/x", "created": 0}))


def test_list_shows_size_age_and_users(tmp_path, monkeypatch):
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path))
    fake_image(tmp_path, "bookworm-amd64-aaaa", ["nginx"])
    fake_image(tmp_path, "bookworm-amd64-bbbb", [])
    record(tmp_path, "web", "bookworm-amd64-aaaa")
    out = CliRunner().invoke(image, ["list", "--json"])
    assert out.exit_code == 0, out.output
    rows = {r["key"]: r for r in json.loads(out.output)["images"]}
    assert rows["bookworm-amd64-aaaa"]["containers"] == ["web"]
    assert rows["bookworm-amd64-aaaa"]["extra_packages"] == ["nginx"]
    assert rows["bookworm-amd64-bbbb"]["containers"] == []
    assert 7000 < rows["bookworm-amd64-bbbb"]["age_seconds"] < 7400
    text = CliRunner().invoke(image, ["list"]).output
    assert "2.0 MB" in text and "2 h" in text and "web" in text


def test_prune_keeps_what_containers_and_the_config_use(tmp_path, monkeypatch):
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path))
    monkeypatch.setattr(im, "host_architecture", lambda: "amd64")
    cfg = tmp_path / "fjord.yaml"
    cfg.write_text(CONFIG)
    from fjord.config.desired import load

    d = load(str(cfg))
    wanted = im.spec_for(d.container("web"), d).key
    fake_image(tmp_path, wanted, ["nginx"])
    fake_image(tmp_path, "bookworm-amd64-used", [])
    fake_image(tmp_path, "bookworm-amd64-old", [])
    record(tmp_path, "x", "bookworm-amd64-used")
    out = CliRunner().invoke(image, ["prune", "-n", "-c", str(cfg), "--json"])
    assert out.exit_code == 0, out.output
    assert [r["key"] for r in json.loads(out.output)["removed"]] == ["bookworm-amd64-old"]
    assert (tmp_path / "images/bookworm-amd64-old").exists()  # a dry run


def test_build_reports_cache_hits_without_root(tmp_path, monkeypatch):
    tell(monkeypatch, FJORD_STATE_DIR=str(tmp_path))
    monkeypatch.setattr(im, "host_architecture", lambda: "amd64")
    cfg = tmp_path / "fjord.yaml"
    cfg.write_text(CONFIG)
    from fjord.config.desired import load

    d = load(str(cfg))
    key = im.spec_for(d.container("web"), d).key
    fake_image(tmp_path, key, ["nginx"])
    out = CliRunner().invoke(image, ["build", "-c", str(cfg), "--json"])
    assert out.exit_code == 0, out.output
    [row] = json.loads(out.output)["images"]
    assert row["key"] == key and row["built"] is False and row["containers"] == ["db", "web"]
    unknown = CliRunner().invoke(image, ["build", "-c", str(cfg), "nosuch"])
    assert unknown.exit_code != 0
