"""How a dataclass field becomes an option: its default, help text and bounds, in one place.

An *option group* is a dataclass whose fields are options, each declared with :func:`option`::

    @dataclasses.dataclass
    class TrainConfig:
        SECTION: ClassVar[str] = "training"
        batch_size: int = option(256, "Global batch size ...", lower=1)

The field's annotation is the option's type: ``bool``, ``int``, ``float``, ``str``, a list
written ``tuple[int, ...]`` (``float``, ``str`` elements too), each of them ``| None`` when the
option may be unset. ``choices`` makes it one of a fixed set, ``lower`` / ``upper`` bound a
number. ``SECTION`` titles the group in a tool's ``--help``. A field whose type is another group
(``TrainConfig.model: ModelConfig``) brings that group's options along.

The flag is named after the field unless ``flag`` names it: a library dataclass keeps its own
field names while its tool's flags say whose they are, e.g. ``FaceIdentityConfig.steps`` is
``--face_net_steps``. Python code, JSON files and :func:`from_mapping` use field names; flags,
flagfiles (:func:`flag_lines`) and the problems :func:`bound_problems` names use flag names.

An option that several groups hold (``--data_dir``) is a :class:`SharedOption`, declared once
and used as ``data_dir: str | None = DATA_DIR.field()`` in each of them.

keras_sf2f/flags.py defines each tool's absl flags from these fields and builds the groups back
from the parsed flags; everything else (library, tests, JSON files) uses the dataclasses
directly, with :func:`from_mapping` for values from outside (flag values, text, JSON).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

_KEY = "keras_sf2f.option"  # the field metadata entry holding an option's OptionSpec
_SCALARS = (bool, int, float, str)


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """What a field declares beyond its name, type and default."""
    help: str
    lower: float | None = None
    upper: float | None = None
    choices: tuple | None = None
    shared: SharedOption | None = None
    flag: str | None = None  # the flag's name when it is not the field's


def option(default: Any, help: str, *, lower: float | None = None, upper: float | None = None,
           choices=None, flag: str | None = None) -> Any:
    """A dataclass field that is an option (see the module docstring); ``flag`` names its flag
    when that is not the field's name."""
    spec = OptionSpec(help, lower, upper, tuple(choices) if choices is not None else None,
                      flag=flag)
    return dataclasses.field(default=default, metadata={_KEY: spec})


@dataclasses.dataclass(frozen=True)
class SharedOption:
    """One option held by several groups, declared once; each group's field is
    ``<name>: <type> = THE_OPTION.field()``, under the same name."""
    name: str
    default: Any
    help: str
    lower: float | None = None
    upper: float | None = None
    choices: tuple | None = None

    def field(self) -> Any:
        spec = OptionSpec(self.help, self.lower, self.upper, self.choices, shared=self)
        return dataclasses.field(default=self.default, metadata={_KEY: spec})


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a group, as read from its field."""
    name: str
    kind: type            # bool, int, float, str, or tuple for a list
    item: type | None     # a list's element type
    optional: bool        # may be None
    default: Any
    spec: OptionSpec
    group: type           # the dataclass holding the field

    @property
    def flag(self) -> str:
        """The flag's name (the field's unless the declaration names another)."""
        return self.spec.flag or self.name

    @property
    def label(self) -> str:
        """How a problem names the option: its flag, and its field when that is named
        otherwise (``steps (--face_net_steps)``)."""
        return self.name if self.flag == self.name else f"{self.name} (--{self.flag})"

    @property
    def help(self) -> str:
        return self.spec.help

    @property
    def declaration(self):
        """What identifies the declaration: the shared option, else the group's field."""
        return self.spec.shared or (self.group, self.name)


def _kind(hint, where: str) -> tuple:
    """``(kind, item, optional)`` of a field annotation."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if len(args) != 2 or type(None) not in args:
            raise TypeError(f"{where}: an option is one type, or one type | None")
        hint, optional = next(a for a in args if a is not type(None)), True
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis or args[0] not in (int, float, str):
            raise TypeError(f"{where}: a list option is tuple[int, ...], tuple[float, ...] "
                            f"or tuple[str, ...]")
        return tuple, args[0], optional
    if hint not in _SCALARS:
        raise TypeError(f"{where}: an option is bool, int, float, str or tuple[..., ...], "
                        f"not {hint}")
    return hint, None, optional


def options_of(group: type) -> list[Option]:
    """The options a group declares itself, in field order (nested groups excluded)."""
    hints = typing.get_type_hints(group)
    found = []
    for field in dataclasses.fields(group):
        spec = field.metadata.get(_KEY)
        where = f"{group.__name__}.{field.name}"
        if spec is None:
            if not dataclasses.is_dataclass(hints[field.name]):
                raise TypeError(f"{where} is neither an option (declare it with option(...)) "
                                f"nor a group")
            continue
        if spec.shared is not None and spec.shared.name != field.name:
            raise TypeError(f"{where} uses the shared option {spec.shared.name!r} under "
                            f"another name")
        kind, item, optional = _kind(hints[field.name], where)
        found.append(Option(field.name, kind, item, optional, field.default, spec, group))
    return found


def nested_groups(group: type) -> list[tuple[str, type]]:
    """``[(field name, group)]`` of the fields that hold another group (TrainConfig.model)."""
    hints = typing.get_type_hints(group)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(group)
            if dataclasses.is_dataclass(hints[f.name])]


def parse_bool(text: str) -> bool:
    """A boolean written as absl reads it: true/t/1 or false/f/0, any case."""
    low = text.strip().lower()
    if low in ("true", "t", "1"):
        return True
    if low in ("false", "f", "0"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true, t, 1, false, f, 0)")


def _scalar(kind: type, value):
    if kind is bool:
        return parse_bool(value) if isinstance(value, str) else bool(value)
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value} is not an integer")
    return kind(value)


def coerce(opt: Option, value):
    """``value`` (typed, or text as in a flagfile) as ``opt``'s type; a list may be given as
    comma-separated text."""
    if value is None:
        return None
    if opt.kind is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        return tuple(_scalar(opt.item, v) for v in value)
    return _scalar(opt.kind, value)


def from_mapping(group: type, values: Mapping[str, Any], what: str):
    """``group`` built from ``{field name: value}``: unknown names are an error, missing ones
    keep their defaults, values are coerced to the fields' types (None keeps the default
    unless the option may be None), and a nested group may be given as a mapping."""
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(group)})
    if unknown:
        raise ValueError(f"unknown {what} keys: {', '.join(unknown)}")
    nested = dict(nested_groups(group))
    by_name = {opt.name: opt for opt in options_of(group)}
    kwargs = {}
    for name, value in values.items():
        if name in nested:
            if value is not None:
                kwargs[name] = value if isinstance(value, nested[name]) else \
                    nested[name].from_mapping(value)
            continue
        opt = by_name[name]
        if value is None and not opt.optional:
            continue
        try:
            kwargs[name] = coerce(opt, value)
        except (TypeError, ValueError):
            raise ValueError(f"{what} {name}: bad value {value!r}") from None
    return group(**kwargs)


def to_dict(instance) -> dict:
    """A group's values as plain JSON types (lists for tuples; nested groups as dicts)."""
    out = {}
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[field.name] = value
    return out


def flag_text(name: str, value) -> str:
    """One option as a flagfile line / command-line argument (``--noname`` for False)."""
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    items = value if isinstance(value, (tuple, list)) else (value,)
    # repr: the shortest text that reads back as the same float.
    text = ",".join(repr(v) if isinstance(v, float) else str(v) for v in items)
    return f"--{name}={text}"


def flag_lines(instance) -> list[str]:
    """A group's values as flagfile lines, nested groups included; unset (None) options are
    left out, so they read back as their default."""
    flag_of = {opt.name: opt.flag for opt in options_of(type(instance))}
    lines = []
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        if dataclasses.is_dataclass(value):
            lines += flag_lines(value)
        elif value is not None:
            lines.append(flag_text(flag_of[field.name], value))
    return lines


def bound_problems(instance) -> list[str]:
    """The group's values outside their declared choices or bounds, one sentence each."""
    problems = []
    for opt in options_of(type(instance)):
        value = getattr(instance, opt.name)
        spec = opt.spec
        if value is None or opt.kind is tuple:
            continue
        if spec.choices is not None and value not in spec.choices:
            problems.append(f"{opt.label} must be one of {spec.choices}, got {value!r}")
        if spec.lower is not None and value < spec.lower:
            problems.append(f"{opt.label} must be >= {spec.lower}, got {value}")
        if spec.upper is not None and value > spec.upper:
            problems.append(f"{opt.label} must be <= {spec.upper}, got {value}")
    return problems
