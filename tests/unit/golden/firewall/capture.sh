#!/bin/sh
# Captures the `nft -j list ruleset` fixtures of tests/unit/test_firewall_coexistence.py
# from real rule sets, loaded inside a throwaway network namespace (root needed; the
# machine's own namespace is never touched):
#   docker.json        Docker's iptables-nft rules (FORWARD policy DROP) beside fjord's table
#   docker-fixed.json  the same after the fix of docs/firewall.md (DOCKER-USER accepts br-int)
#   ufw.json           ufw's default (FORWARD policy DROP, its chains)
#   drop-rule.json     FORWARD policy ACCEPT, but a rule dropping what leaves by br-int
#   firewalld.json     an inet table that rejects forwarded traffic with a last rule
#   clean.json         only fjord's table
# Usage: sh tests/unit/golden/firewall/capture.sh   (from the repository root)
set -eu
here=$(dirname "$0")
ns="fjord-fwcap-$$"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT INT TERM
ip netns add "$ns"
in_ns() { ip netns exec "$ns" "$@"; }
fjord_table() {
    in_ns nft -f "$here/lab.nft"
}
capture() {
    in_ns nft -j list ruleset | python3 -m json.tool --indent 1 > "$here/$1"
    in_ns nft flush ruleset
}

docker_rules() {
    in_ns iptables-nft -N DOCKER
    in_ns iptables-nft -N DOCKER-ISOLATION-STAGE-1
    in_ns iptables-nft -N DOCKER-ISOLATION-STAGE-2
    in_ns iptables-nft -N DOCKER-USER
    in_ns iptables-nft -P FORWARD DROP
    in_ns iptables-nft -A FORWARD -j DOCKER-USER
    in_ns iptables-nft -A FORWARD -j DOCKER-ISOLATION-STAGE-1
    in_ns iptables-nft -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
    in_ns iptables-nft -A FORWARD -o docker0 -j DOCKER
    in_ns iptables-nft -A FORWARD -i docker0 ! -o docker0 -j ACCEPT
    in_ns iptables-nft -A FORWARD -i docker0 -o docker0 -j ACCEPT
    in_ns iptables-nft -A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
    in_ns iptables-nft -A DOCKER-ISOLATION-STAGE-1 -j RETURN
    in_ns iptables-nft -A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
    in_ns iptables-nft -A DOCKER-ISOLATION-STAGE-2 -j RETURN
    in_ns iptables-nft -A DOCKER-USER -j RETURN
    in_ns iptables-nft -t nat -N DOCKER
    in_ns iptables-nft -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
    in_ns iptables-nft -t nat -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
    in_ns iptables-nft -t nat -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
    in_ns iptables-nft -t nat -A DOCKER -i docker0 -j RETURN
}

fjord_table
docker_rules
capture docker.json

fjord_table
docker_rules
in_ns iptables-nft -I DOCKER-USER -i br-int -j ACCEPT
in_ns iptables-nft -I DOCKER-USER -o br-int -j ACCEPT
capture docker-fixed.json

fjord_table
in_ns iptables-nft -N ufw-before-forward
in_ns iptables-nft -N ufw-user-forward
in_ns iptables-nft -P FORWARD DROP
in_ns iptables-nft -A FORWARD -j ufw-before-forward
in_ns iptables-nft -A ufw-before-forward -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
in_ns iptables-nft -A ufw-before-forward -j ufw-user-forward
capture ufw.json

fjord_table
in_ns iptables-nft -A FORWARD -o br-int -j DROP
capture drop-rule.json

fjord_table
in_ns nft -f - <<'NFT'
table inet firewalld {
	chain filter_FORWARD {
		type filter hook forward priority filter + 10; policy accept;
		ct state { established, related } accept
		ct status dnat accept
		iifname "lo" accept
		reject with icmpx admin-prohibited
	}
}
NFT
capture firewalld.json

fjord_table
capture clean.json
