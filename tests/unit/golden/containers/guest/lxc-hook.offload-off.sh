#!/bin/sh
# Written by fjord: mounts the overlay root of a fjord container before libvirt starts
# it (at boot too) and turns checksum offload off after every start. See fjord/containers/hook.py.
# libvirt runs this at every start and stop of every LXC domain, and waits: only
# fjord's own containers, at the moments below, cost a Python start.
state=/var/lib/fjord
case "$1" in ''|.*|*/*) exit 0 ;; esac
[ -d "$state/containers/$1" ] || exit 0
case "$2 $3" in
  "prepare begin")
    # a copy has nothing to mount; an overlay `fjord apply` mounted needs nothing
    [ -d "$state/containers/$1/upper" ] || exit 0
    mountpoint -q "$state/containers/$1/rootfs" && exit 0 ;;
  "start begin")
    # the port libvirt just made is guarded before the container runs
    [ -f "$state/port-guard.json" ] || exit 0 ;;
  "started begin")
    # an unprivileged container's cgroups are delegated to its root (fjord-init waits)
    grep -q '"idmap"' "$state/containers/$1/container.json" 2>/dev/null || : ;;
  "release end") ;;
  *) exit 0 ;;
esac
FJORD_STATE_DIR=$state FJORD_CHECKSUM_OFFLOAD_OFF=1 exec /opt/fjord/venv/bin/python3 -c 'import sys; from fjord.containers.hook import main, leave; leave(main(sys.argv[1:]))' "$@"
