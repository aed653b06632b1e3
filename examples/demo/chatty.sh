#!/bin/sh
# Prints a lot (about 1.2 MB): the worker keeps the head and the tail.
set -eu
i=0
while [ $i -lt 20000 ]; do
    echo "line $i: the quick brown fox jumps over the lazy dog, again and again and again"
    i=$((i + 1))
done
