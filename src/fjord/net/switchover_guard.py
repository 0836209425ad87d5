"""The switchover guard: `python -m fjord.net.switchover_guard STATE DEADLINE`.

Started in its own session before the uplink moves, it outlives fjord. At the deadline,
unless the switchover was confirmed, it restores the snapshot in STATE. SIGTERM from
fjord means: confirmed or already rolled back, nothing to do."""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    """The guard's entry point: the state file and the deadline are its arguments, the
    OVSDB socket comes in its environment (fjord.environment.Environment.variables)."""
    import os

    from fjord import environment
    from fjord.net import switchover

    logging.basicConfig(level=logging.INFO, format="%(asctime)s guard: %(message)s")
    state, deadline = Path(argv[0]), float(argv[1])
    environment.use(environment.Environment(
        state_dir=state.parent,
        ovsdb_socket=os.environ.get(environment.OVSDB) or environment.DEFAULT_OVSDB))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while time.time() < deadline:
        if switchover.confirm_path().exists() or not state.exists():
            return 0
        time.sleep(0.1)
        try:  # fjord extends the deadline once the gateways answered
            deadline = max(deadline, switchover.Snapshot.load(state).deadline)
        except (OSError, ValueError, TypeError):
            pass
    if switchover.confirm_path().exists() or not state.exists():
        return 0
    logging.info("switchover not confirmed by the deadline: rolling back")
    start = time.monotonic()
    snap = switchover.Snapshot.load(state)
    switchover.restore(snap)
    switchover.finish()
    logging.info("rolled back in %.2f s: %s has its previous addresses and routes",
                 time.monotonic() - start, snap.uplink)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
