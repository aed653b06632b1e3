#!/bin/sh
# String handling works.
set -eu
s="testgrid"
[ "${#s}" -eq 8 ]
[ "$(printf '%s' "$s" | tr a-z A-Z)" = "TESTGRID" ]
echo "strings ok"
