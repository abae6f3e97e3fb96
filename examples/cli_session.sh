#!/usr/bin/env bash
# The README's dq session: runs each command in a fresh directory and prints it with
# its real output. Run from the repository after `make demo` or `make test` (which
# make .venv):  examples/cli_session.sh
set -u
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$repo/.venv/bin:$PATH"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
printf 'hello\n' > a.txt
printf 'world\n' > b.txt
run() { echo "\$ $*"; eval "$@" 2>&1; }
run dq submit --dir spool --meta lang=en a.txt b.txt
run "echo urgent | dq submit --dir spool --priority 10 -"
run dq list --dir spool
run dq server --dir spool --until-empty -- wc -c
run dq stats --dir spool
