# perl: allocates (a hash, strings, arrays), forks a child that allocates and exits 7; the
# parent reports the child's status and exits 3 (an exit code the preload must keep).
use strict;
use warnings;

my $n = $ARGV[0] // 100000;
my %h;
$h{"key$_"} = "value" x ($_ % 10 + 1) for 1 .. $n;
my $pid = fork() // die "fork: $!";
if ($pid == 0) {
    my @a = map { [ ($_) x 8 ] } 1 .. $n;
    my $s = join(',', map { $_->[0] } @a[0 .. 99]);
    exit(length($s) > 0 ? 7 : 1);
}
waitpid($pid, 0);
my $status = $? >> 8;
my @keys = sort keys %h;
delete $h{$_} for @keys[0 .. $n / 2 - 1];
print "child exited with $status, ", scalar(keys %h), " keys left\n";
exit 3;
