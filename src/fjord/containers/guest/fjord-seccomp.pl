#!/usr/bin/perl
# Written by fjord; changes here are overwritten by `fjord apply`.
# Run by fjord-init as PID 1 (fjord/containers/sandbox.py): drops the capabilities
# libvirt cannot (@CAPABILITY_NAMES@), installs the syscall
# filter FILTER for this process and all it starts, and becomes INIT. A failure is
# said on the console and left in FJORD_SECCOMP; the boot goes on.
use strict;
use warnings;
my ($filter, @init) = @ARGV;
my @why;
for my $cap (@CAPABILITIES@) {
    # prctl(PR_CAPBSET_DROP, cap); EINVAL: a kernel without this capability
    if (syscall(@PRCTL@, 24, $cap, 0, 0, 0) != 0 && !$!{EINVAL}) {
        push @why, "cannot drop capability $cap: $!";
    }
}
my $prog;
if (open(my $fh, '<:raw', $filter)) {
    local $/;
    $prog = <$fh>;
    close $fh;
} else {
    push @why, "cannot read $filter: $!";
}
if (defined $prog) {
    if (length($prog) == 0 || length($prog) % 8) {
        push @why, "$filter is not a BPF program";
    } else {
        # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
        my $fprog = pack('S x6 P', length($prog) / 8, $prog);
        # seccomp(SECCOMP_SET_MODE_FILTER, 0, &fprog)
        if (syscall(@SECCOMP@, 1, 0, $fprog) != 0) {
            push @why, "cannot install the syscall filter: $!";
        }
    }
}
print STDERR "fjord-init: $_\n" for @why;
$ENV{@MARKER@} = @why ? "failed: $why[0]" : "installed";
exec { $init[0] } @init;
die "fjord-init: cannot run $init[0]: $!\n";
