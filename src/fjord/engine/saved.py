"""A saved plan (`plan --out FILE`, `apply FILE`): the changes plan showed, as
fingerprints, with what they were planned from (the configuration file's hash, the
layers, --prune, fjord's version). `apply FILE` refuses a plan whose configuration or
fjord changed, and (through apply's Shown) one the host no longer matches."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fjord import __version__
from fjord.engine.apply import Shown
from fjord.engine.change import Fingerprint
from fjord.errors import FjordError

FORMAT = "fjord-plan/1"


def config_digest(path: str | Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise FjordError(f"cannot read {path}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class Saved:
    shown: Shown
    config: str          # the path plan read (absolute)
    config_sha256: str
    only: tuple[str, ...]
    prune: bool
    version: str

    def as_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "fjord": self.version,
                "config": {"path": self.config, "sha256": self.config_sha256},
                "only": list(self.only), "prune": self.prune,
                "changes": [f.as_json() for f in self.shown.changes],
                "unreadable": sorted(self.shown.unreadable)}

    def save(self, path: str | Path) -> None:
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.as_json(), f, indent=1)
            f.write("\n")
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: str | Path) -> Saved:
        try:
            data = json.loads(Path(path).read_text())
            if data.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            return cls(
                Shown(tuple(Fingerprint.from_json(c) for c in data["changes"]),
                      frozenset(str(u) for u in data.get("unreadable", ()))),
                str(data["config"]["path"]), str(data["config"]["sha256"]),
                tuple(str(x) for x in data.get("only", ())), bool(data.get("prune")),
                str(data["fjord"]))
        except OSError as exc:
            raise FjordError(f"cannot read the saved plan {path}: {exc.strerror or exc}") \
                from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FjordError(f"{path} is not a saved plan ({exc})",
                             hint="make one with `fjord plan --out FILE`") from exc

    def check(self, config: str | Path, only: tuple[str, ...], prune: bool) -> None:
        """Refuse to apply it when what it was planned from changed."""
        again = "; run fjord plan --out FILE again"
        if self.version != __version__:
            raise FjordError(f"the plan was saved by fjord {self.version}, this is "
                             f"{__version__}{again}")
        if str(Path(config).resolve()) != self.config:
            raise FjordError(f"the plan was made from {self.config}, not {config}",
                             hint=f"apply it with -c {self.config}")
        if config_digest(config) != self.config_sha256:
            raise FjordError(f"the configuration changed since the plan was saved: "
                             f"{self.config}{again}")
        if (only and tuple(sorted(only)) != tuple(sorted(self.only))) or \
                (prune and not self.prune):
            raise FjordError("--only and --prune come from the saved plan",
                             hint="apply the saved plan without them")


def saved_of(shown: Shown, config: str | Path, digest: str, only: tuple[str, ...],
             prune: bool) -> Saved:
    """``digest``: the configuration's, read before it was loaded."""
    return Saved(shown, str(Path(config).resolve()), digest, tuple(only), prune,
                 __version__)
