#!/usr/bin/env python3
"""The time of the first `test_finished` event in a testgrid `--json` event file, in ms since the
epoch (or DEFAULT when there is none).

    first_result.py EVENTS.jsonl [DEFAULT]
"""
import json
import sys

for line in open(sys.argv[1]):
    event = json.loads(line)
    if event["event"] == "test_finished":
        print(event["time_ms"])
        break
else:
    print(sys.argv[2] if len(sys.argv) > 2 else 0)
