"""``--config FILE``: a YAML or JSON file of option values that becomes a command's defaults (flags
on the command line override it, through click's ``default_map``).

The file is untrusted input: a regular file under a size cap, YAML read by the 1.2 core schema
with its expanded size bounded, and each value checked against its option's kind before click
sees it. bench.config declares the options and adds ``config_option()`` to every command's
parameters; this module knows the options only through click.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click

from bench.errors import BadInput, first_line
from bench.sanitize import shown_value as _shown

# A config file is a few hundred bytes of options; these bounds are far above any real one and far
# below what hurts (a YAML file of nested aliases expands exponentially; /dev/zero never ends).
MAX_CONFIG_BYTES = 1 << 20  # the file as read
MAX_CONFIG_EXPANDED = 1 << 20  # its values with every alias expanded: characters of text, plus one per item


def _yaml12_loader() -> type:
    """A PyYAML ``SafeLoader`` that resolves plain scalars by the YAML 1.2 core schema.

    PyYAML implements YAML 1.1 only (ruamel.yaml, which reads 1.2, is not a dependency), where
    ``32:32:32`` is a base-60 integer, ``on`` / ``no`` are booleans, ``010`` is octal and
    ``2024-01-01`` a date. The 1.2 core schema has none of these: they stay strings, and the option's
    own parser judges them. Written by hand because no installed library offers the 1.2 resolvers;
    the regexes are the core schema's (yaml.org/spec/1.2.2, 10.3.2)."""
    import yaml

    class Yaml12Loader(yaml.SafeLoader):
        pass

    replaced = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value"}
    Yaml12Loader.yaml_implicit_resolvers = {
        first: [(tag, regex) for tag, regex in resolvers if tag not in replaced]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    core = {
        "tag:yaml.org,2002:bool": (r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        "tag:yaml.org,2002:int": (r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
        "tag:yaml.org,2002:float": (r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                                    r"|[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$", "-+.0123456789"),
    }
    for tag, (regex, first) in core.items():
        Yaml12Loader.add_implicit_resolver(tag, re.compile(regex), list(first))

    def construct_int(loader: Any, node: Any) -> int:
        """1.2 core ints: decimal (``010`` is ten, not octal eight), 0o octal, 0x hex."""
        text = loader.construct_scalar(node)
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)

    Yaml12Loader.add_constructor("tag:yaml.org,2002:int", construct_int)
    return Yaml12Loader


def _expanded_size(data: Any, limit: int) -> int:
    """The size ``data`` takes with every YAML alias expanded (text characters plus one per item),
    counted without expanding: each distinct object is counted once and its total reused, so a
    600-byte file of nested aliases costs microseconds here, not gigabytes in a ``str()`` later.
    Stops as soon as the total passes ``limit``; a value that contains itself (``&a [*a]``) is
    refused."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        obj, done = stack.pop()
        key = id(obj)
        if isinstance(obj, dict):
            children = [*obj.keys(), *obj.values()]
        elif isinstance(obj, list):
            children = obj
        else:
            sizes[key] = 1 + (len(obj) if isinstance(obj, str) else 24)
            continue
        if done:
            on_path.discard(key)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise BadInput("a value in the config file contains itself (a YAML alias inside its own anchor)")
        on_path.add(key)
        stack.append((obj, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(data)]


def _read_config_text(value: str) -> str:
    """The config file's text: a regular file (not a FIFO, device or /dev/zero) under MAX_CONFIG_BYTES,
    read without blocking on a FIFO and without reading past the cap."""
    import os
    import stat

    try:
        fd = os.open(value, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise BadInput(f"cannot read config file {value}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadInput(f"config file {value} is not a regular file; give a YAML or JSON file")
        data = fh.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise BadInput(f"config file {value} is over {MAX_CONFIG_BYTES >> 20} MiB: a config of options is a few "
                       "hundred bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"cannot read config file {value}: not UTF-8 text ({exc.reason} at byte {exc.start})") \
            from None


def _parse_config_text(value: str, text: str) -> dict:
    """YAML (by the 1.2 core schema) or JSON, by the file's suffix; every error one line."""
    try:
        if Path(value).suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.load(text, Loader=_yaml12_loader())  # noqa: S506 - a SafeLoader subclass
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - yaml and json raise many types (RecursionError too); all one line
        raise BadInput(f"malformed config file {value}: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise BadInput(f"malformed config file {value}: expected a mapping of option names to values")
    if _expanded_size(data, MAX_CONFIG_EXPANDED) > MAX_CONFIG_EXPANDED:
        raise BadInput(f"config file {value} expands (YAML aliases followed) to over {MAX_CONFIG_EXPANDED >> 20} "
                       "MiB of values: a config of options is a few hundred bytes")
    return data


def _scalar(val: Any) -> bool:
    return isinstance(val, (str, int, float)) and not isinstance(val, bool)


def _config_value(param: click.Option, key: str, val: Any, where: str) -> Any:
    """One config file value checked against its option's kind, as the command line would give it:
    a flag takes true / false; an on/off or auto/on/off option also takes true / false; a
    repeatable option a list of texts or a mapping (``MODEL: PATH``); every other option a
    number or text, or a list of them (joined with commas: ``models: [a, b]``). Anything else
    (``channels-last: 0``, ``zero: {a: 1}``, a nested list, null) is one line, exit 2."""
    bad = f"config file {where}: bad value {_shown(val)!r} for '{key}'"
    if param.is_flag and isinstance(param.type, click.types.BoolParamType):
        if not isinstance(val, bool):
            raise BadInput(f"{bad}: give true or false")
        return val
    choices = list(getattr(param.type, "choices", None) or [])
    on_off = set(choices) >= {"on", "off"} or param.metavar == "[auto|on|off]"
    if isinstance(val, bool):
        if not on_off:
            raise BadInput(f"{bad}: give {'one of ' + ', '.join(map(str, choices)) if choices else 'a value'}, "
                           "not true / false")
        return "on" if val else "off"
    if val is None:
        raise BadInput(f"{bad}: give a value, or leave the key out for the default")
    if param.multiple:
        if isinstance(val, dict) and all(_scalar(k) and _scalar(v) for k, v in val.items()):
            return [f"{k}={v}" for k, v in val.items()]
        if isinstance(val, list) and all(_scalar(v) for v in val):
            return [str(v) for v in val]
        if _scalar(val):
            return [str(val)]
        raise BadInput(f"{bad}: give a list of texts or a mapping of texts")
    if isinstance(val, list) and val and all(_scalar(v) for v in val):
        return ",".join(str(v) for v in val)
    if not _scalar(val):
        raise BadInput(f"{bad}: give a number or text{', or a list of them' if isinstance(val, list) else ''}")
    return val


def _load_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--config FILE``: its keys become the command's defaults; flags given on the line win.

    Untrusted input: a regular file under a size cap, YAML read by the 1.2 core schema with its
    expanded size bounded, and each value checked against its option's kind (``_config_value``)."""
    if not value:
        return value
    data = _parse_config_text(value, _read_config_text(value))
    names = {p.name: p for p in ctx.command.params if isinstance(p, click.Option)}
    aliases = {opt.lstrip("-").replace("-", "_"): p.name for p in names.values() for opt in p.opts}
    defaults = {}
    for key, val in data.items():
        name = aliases.get(str(key).replace("-", "_")) if _scalar(key) else None
        if name is None or name == "config":
            raise BadInput(f"config file {value}: unknown option '{_shown(key)}'; options: "
                           + ", ".join(sorted(k for k in aliases if k != "config")))
        defaults[name] = _config_value(names[name], _shown(key), val, value)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def config_option() -> click.Option:
    return click.Option(["--config"], type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
                        callback=_load_config_file,
                        help="YAML/JSON file of option values (keys = option names); flags override it.")
