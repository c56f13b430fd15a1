"""Generate the parameter, backend-option and diagnostic-event tables of docs/ros_interface.md
from the code: the params section of every node in the node registry (eva_ros/registry.py) and
eva-bringup's own, every registered backend's `Options`, and eva_core.events.Event / EVENT_DOCS.

    python tools/gen_param_docs.py           # rewrite the generated blocks in place (atomic)
    python tools/gen_param_docs.py --check   # exit 1 if the docs differ from the code

The blocks sit between `<!-- BEGIN GENERATED: <name> -->` and `<!-- END GENERATED: <name> -->`;
the text around them is written by hand. tests/test_config.py checks the docs are up to date.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DOC = REPO / "docs" / "ros_interface.md"
GENERATOR = "tools/gen_param_docs.py"


def _cell(value) -> str:
    if isinstance(value, str):
        text = f'`"{value}"`' if value == "" else f"`{value}`"
    elif value is None:
        text = "`null`"
    elif isinstance(value, bool):
        text = f"`{str(value).lower()}`"
    elif isinstance(value, (list, tuple)):
        text = "`[" + ", ".join(str(v) for v in value) + "]`"
    elif isinstance(value, dict):
        text = "`{}`" if not value else f"`{value}`"
    else:
        text = f"`{value}`"
    return text.replace("|", "\\|")


def table(cls, title: str) -> str:
    lines = [f"**{title}**", "", "| key | type | default | unit | constraints | description |", "|---|---|---|---|---|---|"]
    for r in cls.doc_rows():
        lines.append("| `{}` | {} | {} | {} | {} | {} |".format(
            r["key"], r["type"].replace("|", "\\|"), _cell(r["default"]), r["unit"],
            r["constraints"].replace("|", "\\|"), r["doc"].replace("|", "\\|")))
    return "\n".join(lines)


def parameters_block() -> str:
    from eva_ros.node_config import SECTIONS
    from eva_ros.registry import NODE_KINDS

    parts = []
    for name, cls in SECTIONS.items():
        if name in NODE_KINDS:
            k = NODE_KINDS[name]
            where = f"node `{name}`: `{k.target}`, `{k.script}`" + ("" if k.bringup else "; not in eva-bringup")
        else:
            where = "read by eva-bringup only; not a node"
        parts.append(table(cls, f"`{name}` ({where}; `{cls.__module__}.{cls.__name__}`)"))
    return "\n\n".join(parts)


def backends_block() -> str:
    from eva_ros.backends import ARM_BACKENDS, CAMERA_SOURCES

    parts = []
    for registry, key in ((CAMERA_SOURCES, "camera.source_options"), (ARM_BACKENDS, "controller.arm")):
        for kind, target in registry.items():
            module, _, name = target.partition(":")
            cls = getattr(importlib.import_module(module), name)
            parts.append(table(cls.Options, f"`{kind}`: `{key}` (`{module}.{name}.Options`)"))
    return "\n\n".join(parts)


def events_block() -> str:
    from eva_core.events import EVENT_DOCS, Event

    lines = ["| event | meaning |", "|---|---|"]
    lines += [f"| `{e.value}` | {EVENT_DOCS[e]} |" for e in Event]
    return "\n".join(lines)


BLOCKS = {"parameters": parameters_block, "backend options": backends_block, "events": events_block}


def render(text: str) -> str:
    for name, fn in BLOCKS.items():
        begin, end = f"<!-- BEGIN GENERATED: {name} ({GENERATOR}) -->", f"<!-- END GENERATED: {name} -->"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if not pattern.search(text):
            raise SystemExit(f"{DOC.relative_to(REPO)}: missing block {begin!r} ... {end!r}")
        text = pattern.sub(lambda _m: f"{begin}\n{fn()}\n{end}", text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="gen_param_docs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/ros_interface.md differs from the code")
    args = ap.parse_args(argv)
    old = DOC.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print(f"gen_param_docs: {DOC.relative_to(REPO)} is out of date; run python {GENERATOR}", file=sys.stderr)
            return 1
        return 0
    if new != old:
        from eva_core.atomic_io import atomic_path

        with atomic_path(DOC, suffix=".md") as tmp:
            Path(tmp).write_text(new)
        print(f"gen_param_docs: wrote {DOC.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
