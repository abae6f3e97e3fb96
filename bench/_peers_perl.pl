# The Perl module's side of bench/peers.py: one workload per run, timed here, with the
# result printed as JSON (or, for 'consume' and 'wait', a line per job).
#
#   perl -I.../IPC-DirQueue/lib bench/_peers_perl.pl MODE DIR [ARGS...]
#
#   enqueue DIR N FIRST   enqueue jobs FIRST .. FIRST+N-1; print {"seconds": S}
#   drain DIR             take every job in order; print seconds, count, out_of_order
#   consume DIR DONEFILE  take jobs, print each job's number, until DONEFILE exists
#                         and nothing is left to take
#   wait DIR COUNT POLL   print "ready", then for COUNT jobs: block in
#                         wait_for_queued_job(1, POLL) up to 30 times, print the
#                         time it came back
#   polls DIR COUNT GAP [SETTLE]
#                         on an empty queue: one pickup (another SETTLE s later),
#                         print "ready", read a line
#                         from stdin, then COUNT pickups GAP seconds apart, print
#                         "done" (bench/nfs.py counts the NFS calls in between)
use strict;
use warnings;
use IPC::DirQueue;
use Time::HiRes qw(time usleep);

my ($mode, $dir, @args) = @ARGV;
my $queue = IPC::DirQueue->new({ dir => $dir });  # ordered, the module's default
$| = 1;

sub payload { return sprintf("%010d", $_[0]) . ("." x 90) }

if ($mode eq 'enqueue') {
    my ($count, $first) = @args;
    my $start = time;
    $queue->enqueue_string(payload($_)) for $first .. $first + $count - 1;
    printf "{\"seconds\": %.6f}\n", time - $start;
}
elsif ($mode eq 'drain') {
    my ($count, $previous, $out_of_order) = (0, -1, 0);
    my ($user0, $system0) = times;
    my $start = time;
    while (my $job = $queue->pickup_queued_job()) {
        my $number = substr($job->get_data(), 0, 10) + 0;
        $out_of_order++ if $number < $previous;
        $previous = $number;
        $count++;
        $job->finish();
    }
    my $end = time;
    my ($user, $system) = times;
    printf "{\"seconds\": %.6f, \"count\": %d, \"out_of_order\": %d, \"start\": %.6f, \"end\": %.6f, \"cpu\": %.3f}\n",
        $end - $start, $count, $out_of_order, $start, $end,
        $user + $system - $user0 - $system0;
}
elsif ($mode eq 'consume') {
    my ($donefile) = @args;
    while (1) {
        # Looked at before the pickup: once every job is in, a pickup that finds
        # nothing means every job is taken.
        my $done = -e $donefile;
        if (my $job = $queue->pickup_queued_job()) {
            print substr($job->get_data(), 0, 10) + 0, "\n";
            $job->finish();
            next;
        }
        last if $done;
        usleep(1000);
    }
}
elsif ($mode eq 'wait') {
    my ($count, $poll) = @args;
    print "ready\n";
    for (1 .. $count) {
        # The module can miss a job put just after a second turns: it compares time()
        # with the directory's mtime, which the kernel stamps from a coarser clock a
        # few ms behind, and then sleeps until the mtime changes again. Waiting 1 s at
        # a time (30 tries) lets such a miss cost a second in the figures, not the run.
        my $job;
        for (1 .. 30) { last if ($job = $queue->wait_for_queued_job(1, $poll)); }
        $job or die "no job within 30 s\n";
        printf "%.6f\n", time;
        $job->finish();
    }
}
elsif ($mode eq 'polls') {
    my ($count, $gap, $settle) = @args;
    $queue->pickup_queued_job() and die "the queue is not empty\n";
    if ($settle) {
        usleep($settle * 1e6);
        $queue->pickup_queued_job() and die "the queue is not empty\n";
    }
    print "ready\n";
    my $go = <STDIN>;
    for (1 .. $count) {
        $queue->pickup_queued_job() and die "the queue is not empty\n";
        usleep($gap * 1e6);
    }
    print "done\n";
}
else {
    die "unknown mode '$mode'\n";
}
