#!/bin/sh
# Files can be written and read in a private temp dir.
set -eu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf 'a\nb\nc\n' > "$dir/f"
[ "$(wc -l < "$dir/f" | tr -d ' ')" -eq 3 ]
echo "files ok"
