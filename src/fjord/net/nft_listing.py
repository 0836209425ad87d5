"""How nft lists a ruleset it has not loaded: ``unshare --net -- python -m
fjord.net.nft_listing FAMILY NAME`` loads the ruleset on stdin in the new, empty network
namespace and prints ``nft -s list table FAMILY NAME`` there. The namespace goes away
with the process; the host's tables are never touched.

What ``plan -v`` diffs against the live table (Nft.declared_listing): both listed by the
same nft the same way, so a table loaded as declared gives no diff. One nft run cannot
do it: a ``list`` in the batch that adds the rules lists the table without them."""

from __future__ import annotations

import sys

from fjord import runner
from fjord.net.nft import NFT, TIMEOUT, ensure_fjords, family, ident


def main(argv: list[str]) -> int:
    fam, name = argv
    text = sys.stdin.read()
    ensure_fjords(text)
    runner.run([NFT, "-f", "-"], input=text, timeout=TIMEOUT)
    result = runner.run([NFT, "-s", "list", "table", family(fam), ident(name)],
                        timeout=TIMEOUT)
    sys.stdout.write(result.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
