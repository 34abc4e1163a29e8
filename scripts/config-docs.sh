#!/bin/sh
# Write what is generated from the config keys declared in zaggd/config/:
# the key tables in README.md and the JSON Schema files in config/schema/.
# tests/test_config_schema.py fails while either differs from the code.
set -eu
cd "$(dirname "$0")/.."
for daemon in producer collector; do
    python3 -m zaggd config-schema "$daemon" > "config/schema/$daemon.json"
done
python3 - <<'PY'
import re

from zaggd.config import documents

with open("README.md", encoding="utf-8") as f:
    text = f.read()
for daemon in documents.SECTIONS:
    start = re.escape(f"<!-- keys: {daemon} ") + r"[^\n]*-->\n"
    text, count = re.subn(
        f"({start}).*?(<!-- end keys -->)",
        lambda m: m[1] + documents.markdown_table(daemon) + m[2],
        text,
        flags=re.S,
    )
    if count != 1:
        raise SystemExit(f"README.md: no key table marked for {daemon}")
with open("README.md", "w", encoding="utf-8") as f:
    f.write(text)
PY
