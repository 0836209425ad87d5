#!/bin/sh
# Written by fjord; changes here are overwritten by `fjord apply`.
# PID 1 of this container for a moment, before systemd (fjord/containers/limits.py).
# libvirt gives a container no cgroup namespace and mounts the host's whole cgroup
# tree at /sys/fs/cgroup. This gives it a cgroup namespace rooted in its own cgroup
# (libvirt's, where its limits are), mounts /sys/fs/cgroup again from inside it, and
# becomes @SYSTEM_INIT@.
# - cgroup v1: joins libvirt's cgroup in every hierarchy first (systemd would move the
#   services to the root it sees, out of the memory limit), then mounts each hierarchy.
# - cgroup v2 (only a 0::PATH line): unshares there and mounts a fresh cgroup2.
# Its last step runs @LOADER@ (perl): drops the capabilities libvirt
# cannot, installs the syscall filter @BPF@, becomes the init.
# Every failure is said on the console ("fjord-init: ...") and the boot goes on; the
# outcome is left in PID 1's environment (FJORD_INIT=cgroupns, or "failed: WHY"), where
# `fjord check` and `fjord status` read it from the host.
set -u
cg=@CGROUP@
init=@SYSTEM_INIT@
say() { echo "fjord-init: $*" >&2; }
fail() {  # the first failure is the one the host reports
    say "$*"
    case ${FJORD_INIT-} in failed:*) ;; *) FJORD_INIT="failed: $*"; export FJORD_INIT ;; esac
}
proc_files() {
    # lxcfs's files over @PROC@: free, ps, top and uptime see the container's memory
    # limit and its own uptime, not the host's (libvirt's own @PROC@/meminfo cannot be
    # read by procps: "Illegal seek"). The host's lxcfs mount is at @LXCFS@ (the domain's
    # second filesystem); it goes once its files are bound.
    lx=@LXCFS@/proc
    if ! (read -r _ < "$lx/meminfo") 2>/dev/null; then
        FJORD_LXCFS="missing: nothing answers at @LXCFS@ (lxcfs not running on the host?)"
        say "$FJORD_LXCFS: /proc shows the host's memory and uptime"
        # libvirt's meminfo breaks free and ps: the host's numbers are better than none
        if grep -q " @PROC@/meminfo fuse" @PROC@/self/mounts 2>/dev/null; then
            umount @PROC@/meminfo 2>/dev/null
        fi
    else
        FJORD_LXCFS=mounted
        for f in @FILES@; do
            [ -e "$lx/$f" ] && [ -e "@PROC@/$f" ] || continue
            if ! mount --bind "$lx/$f" "@PROC@/$f"; then
                FJORD_LXCFS="failed: cannot bind $lx/$f over @PROC@/$f"
                say "$FJORD_LXCFS"
            fi
        done
    fi
    umount -l @LXCFS@ 2>/dev/null
    export FJORD_LXCFS
}
boot() {  # boot "$@": become the system init, with this script's arguments
    FJORD_INIT=${FJORD_INIT:-cgroupns}
    export FJORD_INIT
    proc_files
    # through the loader: fewer capabilities and the syscall filter (sandbox.py)
    if [ -x /usr/bin/perl ] && [ -r @LOADER@ ] && [ -r @BPF@ ]; then
        exec /usr/bin/perl @LOADER@ @BPF@ "$init" "$@"
    fi
    say "no syscall filter: @BPF@, @LOADER@ or perl is missing"
    FJORD_SECCOMP="failed: @BPF@, @LOADER@ or /usr/bin/perl is missing"
    export FJORD_SECCOMP
    exec "$init" "$@"
}

if [ "${1-}" = --fjord-mount2 ]; then
    # Second stage (cgroup v2), in the new cgroup namespace: libvirt's bind mount of
    # the host's whole tree goes, a cgroup2 mounted from here is rooted in our cgroup.
    shift
    # private first: unmounting must not reach a peer of libvirt's mount elsewhere
    mount --make-rprivate "$cg" 2>/dev/null
    umount -R "$cg" 2>/dev/null
    n=0
    while [ $n -lt 8 ] && umount -l "$cg" 2>/dev/null; do n=$((n + 1)); done
    if grep -q " $cg cgroup2 " @PROC@/self/mounts; then
        fail "cannot unmount the host's cgroup tree from $cg"
    fi
    if ! mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$cg"; then
        fail "cannot mount cgroup2 on $cg (systemd will try)"
    elif [ ! -e "$cg/cgroup.procs" ]; then
        fail "the cgroup2 mounted on $cg has no cgroup.procs"
    fi
    boot "$@"
fi

if [ "${1-}" = --fjord-mount ]; then
    # Second stage (cgroup v1), in the new cgroup namespace: every v1 hierarchy, rooted here.
    shift
    if ! mount -t tmpfs -o nosuid,nodev,noexec,mode=755 cgroup "$cg"; then
        fail "cannot mount a tmpfs on $cg"
        boot "$@"
    fi
    while IFS=: read -r id ctrls _; do
        [ "$id" = 0 ] && continue  # cgroup2: systemd mounts it itself
        dir=${ctrls#name=}
        if mkdir -p "$cg/$dir" &&
            mount -t cgroup -o "nosuid,nodev,noexec,$ctrls" cgroup "$cg/$dir"; then
            case $dir in *,*)  # co-mounted controllers: a link for each, as systemd makes
                echo "$dir" | tr , '\n' | while read -r c; do ln -s "$dir" "$cg/$c"; done
            esac
        else
            fail "cannot mount the $ctrls hierarchy"
        fi
    done < @PROC@/self/cgroup
    boot "$@"
fi

unset FJORD_INIT FJORD_LXCFS
own=
v1=
v2=
while IFS=: read -r id ctrls path; do
    case ,$ctrls, in *,memory,*) own=$path ;; esac
    if [ "$id" = 0 ]; then v2=$path; else v1=yes; fi
done < @PROC@/self/cgroup

if [ -z "$v1" ]; then  # cgroup v2 only
    case $v2 in
        ""|/) FJORD_INIT=kept; boot "$@" ;;  # no cgroup2 line, or a cgroup namespace already
    esac
    if ! unshare --cgroup true; then
        fail "cannot unshare a cgroup namespace: it sees the host's whole cgroup tree"
        boot "$@"
    fi
    exec unshare --cgroup /bin/sh @PATH@ --fjord-mount2 "$@"
fi

case $own in
    ""|/) FJORD_INIT=kept; boot "$@" ;;  # no v1 memory hierarchy, or a cgroup namespace already
esac
if ! unshare --cgroup true; then
    fail "cannot unshare a cgroup namespace: the limits may not hold"
    boot "$@"
fi

join() {  # join ID CONTROLLERS: move to $own in that hierarchy
    if [ "$1" = 0 ]; then
        mount -t cgroup2 cgroup2 "$cg/h" || return 1
    else
        mount -t cgroup -o "$2" cgroup "$cg/h" || return 1
    fi
    mkdir -p "$cg/h$own" && echo $$ > "$cg/h$own/cgroup.procs"
    rc=$?
    umount "$cg/h"
    return $rc
}

# In a user namespace (an unprivileged container) a hierarchy cannot be mounted from
# outside a cgroup namespace of its own: join through libvirt's mounts instead, where
# libvirt made the container's root the owner (name=systemd); a hierarchy it did not
# give the container (pids) stays where it is (it holds no limit of the container's).
map="0 0 4294967295"
[ -r @PROC@/self/uid_map ] && map=$(cat @PROC@/self/uid_map)
if [ "$(echo $map)" != "0 0 4294967295" ]; then
    # the host delegates libvirt's cgroups to this root (the libvirt hook, just after
    # the start): systemd needs them to build its tree inside the limits
    # (polled every 10 ms, for 15 s at most: the hook's few tenths of a second are the
    # container's start time)
    n=0
    while [ ! -O "$cg/memory$own" ] && [ -d "$cg/memory$own" ] && [ $n -lt 1500 ]; do
        sleep 0.01
        n=$((n + 1))
    done
    [ -O "$cg/memory$own" ] || say "user namespace: $own is not delegated to this root"
    while IFS=: read -r id ctrls path; do
        [ "$path" = "$own" ] && continue
        dir=$cg/${ctrls#name=}
        [ "$id" = 0 ] && dir=$cg/unified
        if [ -e "$dir/cgroup.procs" ] && mkdir -p "$dir$own" 2>/dev/null &&
            echo $$ > "$dir$own/cgroup.procs" 2>/dev/null; then
            continue
        fi
        say "user namespace: stays out of $own in the ${ctrls:-cgroup2} hierarchy"
    done < @PROC@/self/cgroup
    umount -R "$cg" 2>/dev/null
    exec unshare --cgroup /bin/sh @PATH@ --fjord-mount "$@"
fi

umount -R "$cg" 2>/dev/null
if ! mount -t tmpfs -o mode=700 fjord-init "$cg" || ! mkdir "$cg/h"; then
    fail "cannot mount a tmpfs on $cg: the limits may not hold"
    boot "$@"
fi
while IFS=: read -r id ctrls path; do
    [ "$path" = "$own" ] && continue
    join "$id" "$ctrls" || fail "cannot join $own in the ${ctrls:-cgroup2} hierarchy"
done < @PROC@/self/cgroup
umount "$cg"
exec unshare --cgroup /bin/sh @PATH@ --fjord-mount "$@"
