"""Regenerate the vocabulary tables of docs/cli.md (from "### Everywhere" to the last table row
before the next "## " heading) from nudiff.cli.vocabulary.markdown_table()."""

import sys
from pathlib import Path

from nudiff.cli.vocabulary import markdown_table

path = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/cli.md")
text = path.read_text()
start = text.index("### Everywhere")
stop = text.find("\n## ", start)
stop = len(text) if stop < 0 else stop + 1
block = text[start:stop].splitlines(keepends=True)
last_row = max(i for i, line in enumerate(block) if line.startswith("|"))
rest = "".join(block[last_row + 1 :]) + text[stop:]
table = markdown_table()
path.write_text(text[:start] + table + ("" if table.endswith("\n") else "\n") + rest)
print(f"wrote {path}")
