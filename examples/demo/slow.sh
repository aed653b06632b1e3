#!/bin/sh
# A slow test: 3 seconds.
set -eu
for i in 1 2 3; do
    sleep 1
    echo "slow: $i s"
done
