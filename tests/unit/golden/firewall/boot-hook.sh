#!/bin/sh
# Managed by fjord: loads fjord's nftables tables before the interfaces come up.
# ifupdown runs it for every interface; each table is loaded once per boot.
PATH=/usr/sbin:/usr/bin:/sbin:/bin

command -v nft >/dev/null 2>&1 || exit 0

# load FILE FAMILY TABLE MEANING: FILE, unless it is not there or TABLE is loaded already
load() {
    [ -r "$1" ] || return 0
    nft list table "$2" "$3" >/dev/null 2>&1 && return 0
    if ! nft -f "$1"; then
        echo "fjord-firewall: loading $1 failed: $4" >&2
        logger -t fjord-firewall "loading $1 failed" 2>/dev/null || true
    fi
}

load /etc/fjord/firewall.nft inet fjord 'containers have no NAT and no filtering'
load /etc/fjord/input.nft inet fjord-input 'the ports of the host itself are not filtered'
exit 0
