#!/usr/bin/env bash
# ctest in the build folder given, then, when tests failed, each failed assertion again at the
# end of the output: CI logs keep a failing test's first lines and the log's tail, and a test
# that logs a whole quantization run would otherwise lose the line that says what failed.
#   scripts/run_ctest.sh <build dir> [ctest args]
set -uo pipefail
cd "$1" && shift
ctest --output-on-failure --parallel "$(nproc)" "$@"
status=$?
log=Testing/Temporary/LastTestsFailed.log
if [ "$status" -ne 0 ] && [ -s "$log" ]; then
  echo "---- failed assertions (from Testing/Temporary/LastTest.log) ----"
  # gtest prints "file:line: Failure" and the expression and values after it.
  grep -h -A 12 -E ': Failure$|^\[  FAILED  \]|C\+\+ exception|terminate called' \
    Testing/Temporary/LastTest.log | grep -v -E '^\[[0-9]{4}-[0-9]{2}-[0-9]{2} ' | tail -150
fi
exit "$status"
