"""Print one of the two Quick start commands of README.md ("run" or "test")."""

import re
import sys

text = open("README.md", encoding="utf-8").read()
section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
blocks = re.findall(r"```sh\n(.*?)\n```", section, re.S)
if len(blocks) != 2 or any("\n" in b for b in blocks):
    sys.exit("README Quick start must have exactly two one-line sh blocks")
print(blocks[0] if sys.argv[1] == "run" else blocks[1])
