#!/bin/sh
# `npm test`: every tier. Lint and typecheck side by side, then, if both pass, ava three times: the unit, component
# and kernel tiers (two files at a time); then the kernel tier's timed files (test/kernel/timed/), one at a time;
# then the container tier alone.
#
# The timed files and the container tier hold the issues' timing bounds (ready within 1 s of the process's start;
# routed within 1 s of a NIC's attach, within 2 s of a `docker restart`). Beside another test file on 2 cores they
# measured that file's load, not the gateway: 1.37 and 2.57 s for a hot-plug that takes 0.35 s on the machine alone,
# 1.10 s to ready for 0.65 s alone. Every ava run always runs; the first failure's status is the exit status.
set -u

npm run lint & lint=$!
npm run typecheck
typecheck=$?
wait "$lint" || exit 1
[ "$typecheck" -eq 0 ] || exit "$typecheck"

# A test file outside these four tiers would be run by no ava below: refused rather than skipped.
others=$(find test -name '*.test.ts' ! -path 'test/unit/*' ! -path 'test/component/*' ! -path 'test/kernel/*' ! -path 'test/e2e/*')
if [ -n "$others" ]; then
  echo "npm test: test files outside test/{unit,component,kernel,e2e}, which no tier runs: $others" >&2
  exit 1
fi

# The file names hold no spaces (the tiers' own).
ava $(find test/unit test/component test/kernel -name '*.test.ts' ! -path 'test/kernel/timed/*' | sort)
tiers=$?
ava --concurrency 1 test/kernel/timed
timed=$?
ava test/e2e
container=$?
for status in "$tiers" "$timed" "$container"; do
  [ "$status" -ne 0 ] && exit "$status"
done
exit 0
