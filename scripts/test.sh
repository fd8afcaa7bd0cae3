#!/bin/sh
# `npm test`: every tier. Lint and typecheck side by side, then, if both pass, ava: the unit, component and kernel
# tiers (two files at a time), and after them the container tier alone.
#
# The container tier holds the issue's timing bounds (routed within 2 s of a `docker restart`, within 1 s of a
# `docker network connect`). Beside a kernel test file on 2 cores they measured the other file's load, not the
# gateway: 1.37 and 2.57 s for a hot-plug that takes 0.35 s on the machine alone. Both ava runs always run; the
# first failure's status is the exit status.
set -u

npm run lint & lint=$!
npm run typecheck
typecheck=$?
wait "$lint" || exit 1
[ "$typecheck" -eq 0 ] || exit "$typecheck"

# A test file outside these four tiers would be run by neither ava below: refused rather than skipped.
others=$(find test -name '*.test.ts' ! -path 'test/unit/*' ! -path 'test/component/*' ! -path 'test/kernel/*' ! -path 'test/e2e/*')
if [ -n "$others" ]; then
  echo "npm test: test files outside test/{unit,component,kernel,e2e}, which no tier runs: $others" >&2
  exit 1
fi

ava test/unit test/component test/kernel
tiers=$?
ava test/e2e
container=$?
[ "$tiers" -ne 0 ] && exit "$tiers"
exit "$container"
