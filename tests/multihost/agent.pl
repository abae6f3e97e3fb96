# The Perl module's queue client that multi-host tests run inside a simulated host
# (the counterpart of agent.py): run as perl -I PERL_LIB agent.pl COMMAND ...
#
#   agent.pl produce QDIR COUNT TAG ACKFILE   enqueue COUNT jobs whose data is TAG-i,
#                                             appending TAG-i to ACKFILE once enqueued
#   agent.pl consume QDIR OUT STOPFILE        take jobs until STOPFILE exists and the
#                                             queue stays empty for 2 s; append each
#                                             job's data to OUT before finishing it
#   agent.pl hold QDIR READYFILE              take one job, write READYFILE, sleep
#   agent.pl work QDIR LOG STOPFILE           take jobs until STOPFILE exists and none is
#                                             left, appending "start DATA JOBID HOST PID
#                                             TIME" and "end ..." lines to LOG (one
#                                             write each, O_APPEND: agent.py's format)
#
# Each prints one line of JSON on stdout when it ends.
use strict;
use warnings;
use IO::Handle;
use Sys::Hostname;
use IPC::DirQueue;
use Time::HiRes ();

my ($cmd, $qdir) = @ARGV;
my $q = IPC::DirQueue->new({ dir => $qdir });
my $host = hostname();

if ($cmd eq 'produce') {
    my (undef, undef, $count, $tag, $ackfile) = @ARGV;
    open my $ack, '>>', $ackfile or die "$ackfile: $!";
    $ack->autoflush(1);
    for my $i (0 .. $count - 1) {
        $q->enqueue_string("$tag-$i", { host => $host, i => $i }) or die "enqueue $tag-$i failed";
        print $ack "$tag-$i\n";
    }
    close $ack or die "$ackfile: $!";
    print "{\"produced\": $count}\n";
}
elsif ($cmd eq 'consume') {
    my (undef, undef, $out, $stopfile) = @ARGV;
    open my $log, '>>', $out or die "$out: $!";
    $log->autoflush(1);
    my $done = 0;
    while (1) {
        my $job = $q->wait_for_queued_job(2, 0.2);
        if (!$job) {
            last if -e $stopfile;
            next;
        }
        print $log $job->get_data(), "\n";
        $log->sync;
        $job->finish();
        $done++;
    }
    print "{\"consumed\": $done, \"host\": \"$host\"}\n";
}
elsif ($cmd eq 'work') {
    my (undef, undef, $logfile, $stopfile) = @ARGV;
    open my $log, '>>', $logfile or die "$logfile: $!";
    $log->autoflush(1);
    my $line = sub {
        my ($what, $job) = @_;
        my $data = $job->get_data();
        printf $log "%s %s %s %s %d %.6f\n", $what, $data, $job->{jobid}, $host, $$, Time::HiRes::time();
    };
    my $done = 0;
    while (1) {
        my $job = $q->wait_for_queued_job(1, 0.2);
        if (!$job) {
            last if -e $stopfile;
            next;
        }
        $line->('start', $job);
        Time::HiRes::sleep(0.01);
        $line->('end', $job);
        $job->finish();
        $done++;
    }
    print "{\"done\": $done, \"host\": \"$host\"}\n";
}
elsif ($cmd eq 'hold') {
    my (undef, undef, $readyfile) = @ARGV;
    my $job = $q->wait_for_queued_job(30, 0.2) or die "no job to hold";
    open my $ready, '>', $readyfile or die "$readyfile: $!";
    print $ready $job->{jobid};
    close $ready;
    sleep 3600;    # The test kills us here, mid-job.
}
else {
    die "unknown command $cmd\n";
}
