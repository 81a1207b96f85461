"""Rewrite what is derived from g2u/schema.py in files that cannot import it: the README's request-field
table and the request-field parameters of MLproject's evaluate/ablation entry points.

    python scripts/sync_schema.py          # rewrite both
    python scripts/sync_schema.py --check  # exit 1 if either differs (tests/test_schema.py checks too)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from g2u.schema import SETTING_FIELDS, field_table  # noqa: E402

ENTRY_POINTS = ("main", "ablation", "paper_table")  # `evaluate` is an alias of `main` (a YAML anchor)


def readme_text(text: str) -> str:
    return re.sub(r"(<!-- request-fields:start -->\n).*?(<!-- request-fields:end -->)",
                  lambda m: m.group(1) + field_table() + m.group(2), text, flags=re.S)


def mlproject_text(text: str) -> str:
    """Each entry point's parameter block keeps its own parameters and gets every setting field ('' =
    the schema's default); its command passes each as --flag {name}."""
    out = text
    for point in ENTRY_POINTS:
        head = re.search(rf"^  {point}:.*\n    parameters:\n", out, flags=re.M)
        assert head, f"MLproject has no {point} parameters"
        body_start = head.end()
        body_end = out.index("    command:", body_start)
        own = [line for line in out[body_start:body_end].splitlines()
               if line.strip() and line.strip().split(":")[0] not in SETTING_FIELDS]
        params = own + [f'      {name}: {{type: string, default: ""}}' for name in SETTING_FIELDS]
        cmd_end = out.index("\n", body_end)
        command = out[body_end:cmd_end]
        module_and_own = re.sub(r"\s--[\w-]+ \{(\w+)\}", lambda m: "" if m.group(1) in SETTING_FIELDS else m.group(0),
                                command.rstrip('"'))
        command = module_and_own + "".join(f" --{n.replace('_', '-')} {{{n}}}" for n in SETTING_FIELDS) + '"'
        out = out[:body_start] + "\n".join(params) + "\n" + command + out[cmd_end:]
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, fix in ((ROOT / "README.md", readme_text), (ROOT / "MLproject", mlproject_text)):
        text = path.read_text()
        new = fix(text)
        if new != text:
            stale.append(path.name)
            if not check:
                path.write_text(new)
    if check and stale:
        print(f"out of date with g2u/schema.py: {', '.join(stale)} (run python scripts/sync_schema.py)")
        return 1
    print("rewrote " + ", ".join(stale) if stale and not check else "in sync")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
