#!/bin/sh
# Managed by fjord: loads fjord's nftables table before the interfaces come up.
# ifupdown runs it for every interface; the table is loaded once per boot.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
ruleset=/etc/fjord/firewall.nft

[ -r "$ruleset" ] || exit 0
command -v nft >/dev/null 2>&1 || exit 0
nft list table inet fjord >/dev/null 2>&1 && exit 0
if ! nft -f "$ruleset"; then
    echo "fjord-firewall: loading $ruleset failed: containers have no NAT and no filtering" >&2
    logger -t fjord-firewall "loading $ruleset failed" 2>/dev/null || true
fi
exit 0
