#!/bin/sh
# This one fails on purpose: the summary shows it with the tail of its output.
echo "checking that 2 + 2 = 5"
expected=5
actual=$((2 + 2))
if [ "$actual" -ne "$expected" ]; then
    echo "assertion failed: expected $expected, got $actual" >&2
    exit 1
fi
