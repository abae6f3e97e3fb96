"""Running the real Perl module (IPC::DirQueue 1.1, in ``../shared/perl/``) from tests.

Tests that use it skip, with one line saying why, where it or perl is absent.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from _helpers import SHARED

PERL_LIB = SHARED / "perl" / "IPC-DirQueue" / "lib"


def needs_perl() -> None:
    """Skip the calling test unless perl and the Perl module are here."""
    if shutil.which("perl") is None:
        pytest.skip("perl is not installed")
    if not (PERL_LIB / "IPC" / "DirQueue.pm").is_file():
        pytest.skip(f"the Perl module is not at {PERL_LIB} (../shared/perl)")


def run_perl(script: str, *args: str, timeout: float = 60) -> str:
    """Run ``script`` with IPC::DirQueue loaded and ``args`` in @ARGV; return stdout."""
    needs_perl()
    done = subprocess.run(
        ["perl", f"-I{PERL_LIB}", "-MIPC::DirQueue", "-e", script, *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert done.returncode == 0, f"perl failed ({done.returncode}): {done.stderr}"
    return done.stdout


#: Takes every job it can, prints each job id, finishes it: a Perl worker draining.
PERL_DRAIN = r"""
my $q = IPC::DirQueue->new({ dir => $ARGV[0] });
while (my $job = $q->pickup_queued_job()) {
    print $job->{jobid}, "\n";
    $job->finish();
}
"""
