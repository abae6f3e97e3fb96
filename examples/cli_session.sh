#!/usr/bin/env bash
# The README's and docs/cli.md's dq sessions: runs each command in a fresh directory and
# prints it with its real output (stdout and stderr, in the order written). Run from
# the repository after `make demo` or `make test` (which make .venv):
#   examples/cli_session.sh
# tests/test_cli_session.py runs it and checks the docs' sessions against its output.
set -u
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$repo/.venv/bin:$PATH"
unset DQ_DIR
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
printf 'hello\n' > a.txt
printf 'world\n' > b.txt
printf '#!/bin/sh\necho "convert: no such font: Helvetica" >&2\nexit 3\n' > convert.sh
chmod +x convert.sh
run() { echo "\$ $*"; eval "$@" 2>&1; }
run dq submit --dir spool --meta lang=en a.txt b.txt
run "echo urgent | dq submit --dir spool --priority 10 -"
run dq list --dir spool
run dq server --dir spool --until-empty -- wc -c
run dq stats --dir spool
echo "# docs/cli.md: failed jobs"
run dq submit --dir spool --meta lang=de b.txt
run dq server --dir spool --until-empty --max-attempts 1 -- ./convert.sh
run dq list --dir spool --failed
failed_id="$(dq list --dir spool --failed --nl | head -1 | cut -d'"' -f4)"
run dq show --dir spool "$failed_id"
echo "# docs/cli.md: cancelling and emptying"
run dq submit --dir spool --priority 20 a.txt b.txt
run "echo later | dq submit --dir spool --delay 1h -"
first_id="$(dq list --dir spool --nl | head -1 | cut -d'"' -f4)"
run dq cancel --dir spool "$first_id"
run dq list --dir spool
run dq empty --dir spool
