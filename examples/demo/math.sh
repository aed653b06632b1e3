#!/bin/sh
# Arithmetic in the shell works.
set -eu
[ $((6 * 7)) -eq 42 ]
echo "math ok"
