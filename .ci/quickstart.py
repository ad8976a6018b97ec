"""Print the README Quickstart's two shell commands, one per line, for .ci/run."""

from __future__ import annotations

import re
import sys
from pathlib import Path

text = Path(sys.argv[1]).read_text(encoding="utf-8")
section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
blocks = re.findall(r"```(?:bash|sh|console)\n(.*?)```", section, flags=re.S)
for block in blocks[:2]:
    lines = [line for line in block.strip().splitlines() if not line.lstrip().startswith("#")]
    print(" ".join(line.rstrip("\\").strip() for line in lines))
