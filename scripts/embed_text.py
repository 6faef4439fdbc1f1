#!/usr/bin/env python3
"""Writes a text file as a C header: `static const char NAME[] = "...";`
(build time: hutchd embeds the Deno REPL driver, src/daemon/core/deno_repl.js)."""
import sys

name, src, out = sys.argv[1:4]
data = open(src, "rb").read()
lines = [f"/* generated from {src.rsplit('/', 1)[-1]} by scripts/embed_text.py: do not edit */",
         f"static const char {name}[] ="]
for i in range(0, len(data), 64):
    chunk = data[i:i + 64]
    lines.append('    "' + "".join(f"\\x{b:02x}" for b in chunk) + '"')
lines[-1] += ";"
open(out, "w").write("\n".join(lines) + "\n")
