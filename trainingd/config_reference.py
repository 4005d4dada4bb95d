"""The configuration reference (``docs/configuration.md``), generated from ``config.py``'s field docstrings.

    python -m trainingd.config_reference --markdown > docs/configuration.md
    python -m trainingd.config --markdown                                  (the same)

One table per section (the top level, then each nested block such as ``lora`` or ``auto_generate``): the key,
its type, its default and the docstring written under the field, so the page cannot drift from the code
(``tests/test_config_reference.py`` compares the committed page with a fresh one).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import sys
import typing
from typing import Any

from trainingd import config

HEADER = """# Configuration reference

Every key of a home's `config.json`, with its type and default. Generated from the field docstrings of
`trainingd/config.py` by `python -m trainingd.config --markdown` (do not edit by hand; a test compares this
page with a fresh one). An unknown or mistyped key is refused naming the key (`python3 config_validator.py`);
a key left out takes its default, so an old config keeps working. Only `base_model`, `lora.r`, `lora.alpha`
and `lora.target_modules` are locked into the adapter (`locked_keys`).
"""


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a config dataclass (attribute docstrings exist only in the source)."""
    docs: dict[str, str] = {}
    (node,) = [n for n in ast.parse(inspect.getsource(config)).body
               if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
    for field, doc in zip(node.body, node.body[1:]):
        if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
                and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)):
            docs[field.target.id] = " ".join(str(doc.value.value).split())
    return docs


def _type_name(tp: Any) -> str:
    if isinstance(tp, str):
        return tp
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return " or ".join(_type_name(a) for a in rest) + " or null"
    if args:
        return " or ".join(_type_name(a) for a in args)
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, getattr(tp, "__name__", str(tp)))


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def sections() -> list[tuple[str, type]]:
    """``[("", Config), ("lora", LoraConfig), ...]``: the top level, then each nested block in field order."""
    out: list[tuple[str, type]] = [("", config.Config)]
    hints = typing.get_type_hints(config.Config)
    for f in dataclasses.fields(config.Config):
        if dataclasses.is_dataclass(hints[f.name]):
            out.append((f.name, hints[f.name]))
    return out


def markdown() -> str:
    lines = [HEADER.rstrip("\n")]
    for prefix, cls in sections():
        docs, hints = field_docs(cls), typing.get_type_hints(cls)
        lines += ["", f"## `{prefix}`" if prefix else "## Top level", ""]
        if cls.__doc__ and prefix:
            lines += [" ".join(cls.__doc__.split()), ""]
        lines += ["| key | type | default | what it does |", "| --- | --- | --- | --- |"]
        for f in dataclasses.fields(cls):
            key = f"{prefix}.{f.name}" if prefix else f.name
            if dataclasses.is_dataclass(hints[f.name]):
                lines.append(f"| `{key}` | object | see below | {_cell(docs.get(f.name, ''))} |")
                continue
            default = json.dumps(_default(f))
            lines.append(f"| `{key}` | {_type_name(hints[f.name])} | `{_cell(default)}` | "
                         f"{_cell(docs.get(f.name, ''))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m trainingd.config", description="Print the configuration reference.")
    p.add_argument("--markdown", action="store_true", required=True, help="as Markdown (docs/configuration.md)")
    p.parse_args(argv)
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
