"""Rewrite what is derived from the code in files that cannot import it: the request-field table of the
REST API page (docs/rest-api.md, g2u/schema.py), the handler-settings table of the serving page
(docs/serving.md, g2u/handler_settings.py), and in MLproject's evaluate/ablation entry points the
request-field and loader-option parameters (g2u/schema.py, g2u/loading.py) and the default modes
(g2u/modes.py).

    python scripts/sync_schema.py          # rewrite both
    python scripts/sync_schema.py --check  # exit 1 if either differs (tests/core/test_schema.py checks too)
"""

from __future__ import annotations

import re
import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from g2u.handler_settings import HandlerSettings  # noqa: E402
from g2u.loading import LOADER_FIELDS  # noqa: E402
from g2u.modes import DEFAULT_EVAL_MODES  # noqa: E402
from g2u.schema import SETTING_FIELDS, field_table  # noqa: E402

ENTRY_POINTS = ("main", "ablation", "paper_table")  # `evaluate` is an alias of `main` (a YAML anchor)
FIELD_TABLE_PAGE = ROOT / "docs" / "rest-api.md"
"""The page holding the request-field table between ``<!-- request-fields:start/end -->``."""
SETTINGS_TABLE_PAGE = ROOT / "docs" / "serving.md"
"""The page holding the handler-settings table between ``<!-- handler-settings:start/end -->``."""
DERIVED = (*LOADER_FIELDS, *SETTING_FIELDS)
"""Parameters written from the code: the loader options, then every request setting ('' = the default)."""


def handler_settings_table() -> str:
    """The table of the model-config ``handler:`` keys (nested ones dotted), defaults and meanings."""
    from pydantic import BaseModel

    def shown(value) -> str:
        if value is None:
            return "—"
        if isinstance(value, (BaseModel, dict)):
            return "`{}`"
        return f"`{str(value).lower() if isinstance(value, bool) else value}`"

    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for name, info in HandlerSettings.model_fields.items():
        lines.append(f"| `{name}` | {shown(info.get_default(call_default_factory=True))} | {info.description} |")
        nested = [a for a in typing.get_args(info.annotation) or (info.annotation,) if isinstance(a, type)
                  and issubclass(a, BaseModel)]
        for model in nested:
            for sub, sub_info in model.model_fields.items():
                default = "required" if sub_info.is_required() else shown(sub_info.default)
                lines.append(f"| `{name}.{sub}` | {default} | {sub_info.description} |")
    return "\n".join(lines) + "\n"


def field_table_text(text: str) -> str:
    return re.sub(r"(<!-- request-fields:start -->\n).*?(<!-- request-fields:end -->)",
                  lambda m: m.group(1) + field_table() + m.group(2), text, flags=re.S)


def settings_table_text(text: str) -> str:
    return re.sub(r"(<!-- handler-settings:start -->\n).*?(<!-- handler-settings:end -->)",
                  lambda m: m.group(1) + handler_settings_table() + m.group(2), text, flags=re.S)


def mlproject_text(text: str) -> str:
    """Each entry point's parameter block keeps its own parameters and gets every loader option and setting
    field ('' = the code's default); its command passes each as --flag {name}. ``main`` compares the
    default modes unless told otherwise."""
    out = text
    for point in ENTRY_POINTS:
        head = re.search(rf"^  {point}:.*\n    parameters:\n", out, flags=re.M)
        assert head, f"MLproject has no {point} parameters"
        body_start = head.end()
        body_end = out.index("    command:", body_start)
        own = [line for line in out[body_start:body_end].splitlines()
               if line.strip() and line.strip().split(":")[0] not in DERIVED]
        own = [f'      modes: {{type: string, default: "{",".join(DEFAULT_EVAL_MODES)}"}}'
               if line.strip().startswith("modes:") else line for line in own]
        params = own + [f'      {name}: {{type: string, default: ""}}' for name in DERIVED]
        cmd_end = out.index("\n", body_end)
        command = out[body_end:cmd_end]
        module_and_own = re.sub(r"\s--[\w-]+ \{(\w+)\}", lambda m: "" if m.group(1) in DERIVED else m.group(0),
                                command.rstrip('"'))
        command = module_and_own + "".join(f" --{n.replace('_', '-')} {{{n}}}" for n in DERIVED) + '"'
        out = out[:body_start] + "\n".join(params) + "\n" + command + out[cmd_end:]
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, fix in ((FIELD_TABLE_PAGE, field_table_text), (SETTINGS_TABLE_PAGE, settings_table_text),
                      (ROOT / "MLproject", mlproject_text)):
        text = path.read_text()
        new = fix(text)
        if new != text:
            stale.append(path.name)
            if not check:
                path.write_text(new)
    if check and stale:
        print(f"out of date with the code: {', '.join(stale)} (run python scripts/sync_schema.py)")
        return 1
    print("rewrote " + ", ".join(stale) if stale and not check else "in sync")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
