#!/bin/sh
# testgrid tells each test who it is.
set -eu
[ -n "$TESTGRID_TEST" ]
[ -n "$TESTGRID_SESSION" ]
[ "$TESTGRID_ATTEMPT" -ge 1 ]
echo "running $TESTGRID_TEST, attempt $TESTGRID_ATTEMPT"
