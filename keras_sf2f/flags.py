"""Each tool's absl flags, derived from the option dataclasses, and the rules for reading them.

The options themselves are declared once, as dataclass fields (keras_sf2f/config/options.py
says how): the library's ``ModelConfig`` (keras_sf2f/models/builder.py), ``TrainConfig``
(keras_sf2f/training/config.py), ``FaceIdentityConfig``
(keras_sf2f/training/face_identity_config.py) and ``CurationConfig``
(keras_sf2f/curation/config.py), and the tools' own groups of keras_sf2f/config/groups.py. A
flag is named after its field unless the field's declaration names it (``FaceIdentityConfig``'s
``steps`` is ``--face_net_steps``). :data:`TOOLS` says which groups each tool uses;
:class:`ToolFlags` is one tool's ``absl.flags.FlagValues`` holding exactly those groups' flags
(plus absl's logging flags), grouped by section in its ``--help``, and builds the dataclasses
back from the parsed values (``FLAGS.config(group)``).
The library never reads flags: the tools in keras_sf2f/cli/ hand it the dataclasses.

What a tool does with a flag name:

* one of its own options: taken;
* an option only other tools of the project have: on the command line an error naming those
  tools; inside a ``--flagfile`` skipped silently, because flagfiles are shared between tools
  (scripts/main_job.sh passes configs/demo.cfg, which holds data, model and training options,
  to prepare_data, train_face_identity, train and evaluate);
* a name no tool has: an error (with the flagfile and line when it is in one).

No TensorFlow or Keras is imported here.
"""

from __future__ import annotations

import sys
from typing import Iterable, Sequence

from absl import flags

from keras_sf2f import runs
from keras_sf2f.config import groups, options
from keras_sf2f.curation.config import CurationConfig
from keras_sf2f.models.builder import ModelConfig
from keras_sf2f.training.config import TrainConfig
from keras_sf2f.training.face_identity_config import FaceIdentityConfig

# Which option groups each tool uses (keras_sf2f/cli/<tool>.py; the client parses its own with
# argparse). A group's nested groups come with it (TrainConfig brings ModelConfig).
TOOLS = {
    "prepare_data": (groups.PrepareOptions,),
    "train_face_identity": (groups.FaceIdentityOptions, FaceIdentityConfig),
    "train": (ModelConfig, TrainConfig),
    "evaluate": (groups.EvaluateOptions, groups.EvalProtocolOptions, ModelConfig),
    "ablations": (groups.AblationOptions, groups.EvalProtocolOptions),
    "describe_model": (groups.DescribeOptions, ModelConfig),
    "export_savedmodel": (groups.ExportOptions, ModelConfig),
    "serve": (groups.ServeOptions,),
    "client": (groups.ClientOptions,),
    "import_reference_checkpoint": (groups.ReferenceImportOptions, ModelConfig),
    "import_facenet_weights": (groups.FacenetImportOptions,),
    "curate_faces": (groups.CurationOptions, CurationConfig),
    "review_faces": (groups.ReviewOptions,),
}

_HELP_ARGUMENTS = {"--help": "short", "-help": "short", "-h": "short", "-?": "short",
                   "--helpshort": "short", "-helpshort": "short",
                   "--helpfull": "full", "-helpfull": "full"}
# Flags absl itself handles while parsing.
_ABSL_SPECIAL = ("flagfile", "undefok")


class OptionError(flags.Error):
    """A flag this tool does not have: another tool's (on the command line), or no tool's."""


def tool_groups(tool: str) -> list[type]:
    """The option groups of a tool, nested groups first, each once."""
    found = []

    def add(group):
        for _, nested in options.nested_groups(group):
            add(nested)
        if group not in found:
            found.append(group)

    for group in TOOLS[tool]:
        add(group)
    return found


def tool_options(tool: str) -> dict[str, options.Option]:
    """``{flag name: Option}`` of a tool (a shared option once, in its first group)."""
    found = {}
    for group in tool_groups(tool):
        for opt in options.options_of(group):
            found.setdefault(opt.flag, opt)
    return found


def owners(name: str) -> tuple[str, ...]:
    """The tools having the option ``name`` (``--noname`` counts for a boolean ``name``)."""
    def has(tool, wanted):
        opt = tool_options(tool).get(wanted)
        return opt is not None and (wanted == name or opt.kind is bool)

    found = tuple(tool for tool in TOOLS if has(tool, name))
    if not found and name.startswith("no"):
        found = tuple(tool for tool in TOOLS if has(tool, name[2:]))
    return found


def _define(opt: options.Option, section: str, flag_values: flags.FlagValues) -> None:
    spec, default = opt.spec, opt.default
    name, common = opt.flag, dict(flag_values=flag_values, module_name=section)
    if opt.kind is bool:
        flags.DEFINE_bool(name, default, opt.help, **common)
    elif spec.choices is not None:
        flags.DEFINE_enum(name, None if default is None else str(default),
                          [str(c) for c in spec.choices], opt.help, **common)
    elif opt.kind is int:
        flags.DEFINE_integer(name, default, opt.help, lower_bound=spec.lower,
                             upper_bound=spec.upper, **common)
    elif opt.kind is float:
        flags.DEFINE_float(name, default, opt.help, lower_bound=spec.lower,
                           upper_bound=spec.upper, **common)
    elif opt.kind is tuple:
        flags.DEFINE_list(name, [str(v) for v in default], opt.help, **common)
    else:
        flags.DEFINE_string(name, default, opt.help, **common)


def _register_check(group: type, flag_values: flags.FlagValues) -> None:
    """A group's ``check_parsed()`` (ModelConfig's whole validation, TrainConfig's value checks)
    as an absl validator: a bad combination stops the command while its flags are parsed."""
    group_options = options.options_of(group)

    def check(values):  # {flag name: value}
        try:
            options.from_mapping(group, {opt.name: values[opt.flag] for opt in group_options},
                                 group.SECTION).check_parsed()
        except ValueError as e:
            raise flags.ValidationError(str(e)) from None
        return True

    flags.register_multi_flags_validator(
        [opt.flag for opt in group_options], check,
        message=f"invalid {group.SECTION} options", flag_values=flag_values)


def define_groups(group_list: Iterable[type], flag_values: flags.FlagValues) -> None:
    """Defines the options of ``group_list`` as absl flags in ``flag_values``, each under its
    group's SECTION (absl's help groups flags by that name); an option already defined there
    (a shared one) is not defined again."""
    for group in group_list:
        for opt in options.options_of(group):
            if opt.flag not in flag_values:
                _define(opt, group.SECTION, flag_values)
        if hasattr(group, "check_parsed"):
            _register_check(group, flag_values)


def build(group: type, flag_values: flags.FlagValues):
    """The ``group`` dataclass of parsed flags (nested groups from their own flags)."""
    values = {opt.name: flag_values[opt.flag].value for opt in options.options_of(group)}
    for name, nested in options.nested_groups(group):
        values[name] = build(nested, flag_values)
    return options.from_mapping(group, values, group.SECTION)


def _flag_name(arg: str) -> tuple[str | None, bool]:
    """``(name, has '=value')`` of a command-line argument, ``(None, False)`` for one that is
    not a flag."""
    if not arg.startswith("-") or arg in ("-", "--"):
        return None, False
    name, has_value, _ = arg.lstrip("-").partition("=")
    return name, bool(has_value)


class ToolFlags(flags.FlagValues):
    """The flags of one tool of :data:`TOOLS` (a FlagValues of its own, not absl's global
    FLAGS). Calling it with a command line applies the rules of the module docstring before
    absl parses; ``flagfiles`` then lists the flagfiles it read."""

    def __init__(self, tool: str):
        super().__init__()
        # FlagValues keeps its state in __dict__ (attribute assignment sets flag values).
        self.__dict__["tool_name"] = tool
        self.__dict__["tool_groups"] = tool_groups(tool)
        self.__dict__["flagfiles"] = []
        define_groups(self.tool_groups, self)
        # absl's logging flags (--verbosity, --logtostderr, ...) as every absl program has them;
        # the same Flag objects as absl's own, so setting them configures absl's logging.
        for flag in flags.FLAGS.get_flags_for_module("absl.logging"):
            self[flag.name] = flag
            self.register_flag_by_module("absl.logging", flag)

    def __call__(self, argv: Sequence[str], known_only: bool = False):
        self.__dict__["flagfiles"] = []
        return super().__call__(self._own_arguments(list(argv)), known_only=known_only)

    # -- the rules -------------------------------------------------------------------------

    def _has(self, name: str) -> bool:
        if name in self or name in _ABSL_SPECIAL:
            return True
        return name.startswith("no") and name[2:] in self and self[name[2:]].boolean

    def _not_mine(self, name: str) -> str:
        """Why ``name`` (known to be no flag of this tool) is refused on the command line."""
        others = owners(name)
        if not others:
            return ""  # absl's own error names it, with suggestions
        return (f"--{name} is an option of {', '.join(others)}, not of {self.tool_name} "
                f"(--helpshort lists the options of {self.tool_name})")

    def _own_arguments(self, argv: list[str]) -> list[str]:
        """``argv`` with every --flagfile expanded and the other tools' options of the
        flagfiles left out; raises OptionError for another tool's option on the command line
        and for a name no tool has in a flagfile."""
        out, args, i = argv[:1], argv[1:], 0
        while i < len(args):
            arg = args[i]
            i += 1
            if arg == "--":
                out += args[i - 1:]
                break
            name, has_value = _flag_name(arg)
            if name == "flagfile":
                if has_value:
                    path = arg.partition("=")[2]
                else:  # "--flagfile FILE"
                    path = args[i] if i < len(args) else ""
                    i += 1
                out += self._flagfile_arguments(path)
                continue
            if name is not None and not self._has(name):
                problem = self._not_mine(name)
                if problem:
                    raise OptionError(problem)
            out.append(arg)
            # absl's "--name value" form: the value is the next argument.
            if name is not None and not has_value and name in self and \
                    not self[name].boolean and i < len(args):
                out.append(args[i])
                i += 1
        return out

    def _flagfile_arguments(self, path: str) -> list[str]:
        if not path:
            return []  # absl ignores an empty --flagfile=
        try:
            entries = runs.flagfile_entries(path)
        except runs.RunError as e:
            raise OptionError(str(e)) from None
        self.flagfiles.append(path)
        kept = []
        for where, line_number, line in entries:
            name, _ = _flag_name(line)
            if name is None:
                raise OptionError(f"{where}:{line_number}: {line!r} is not a flag (--name=value, "
                                  f"--name or --noname)")
            if self._has(name):
                kept.append(line)
            elif not owners(name):
                raise OptionError(f"{where}:{line_number}: --{name} is not an option of any "
                                  f"keras-sf2f tool")
            # else: another tool's option in a shared flagfile, skipped.
        return kept

    # -- values ----------------------------------------------------------------------------

    def config(self, group: type):
        """The ``group`` dataclass of the parsed flags (``FLAGS.config(TrainConfig)``)."""
        return build(group, self)

    def given(self, group: type) -> dict:
        """``{field name: value}`` of ``group``'s options that the command line or a flagfile
        set (not those left at their defaults)."""
        return {opt.name: options.coerce(opt, self[opt.flag].value)
                for opt in options.options_of(group) if self[opt.flag].present}

    # -- help ------------------------------------------------------------------------------

    def help_text(self, full: bool = False) -> str:
        """The tool's options by section, with defaults (``full``: absl's logging flags too)."""
        sections = [self.module_help(group.SECTION) for group in self.tool_groups]
        if full:
            sections.append(self.module_help("absl.logging"))
        return "\n".join(s for s in sections if s.strip())

    def parse_command_line(self, argv: Sequence[str]) -> list[str]:
        """``absl.app.run``'s flags_parser: --help / --helpshort / --helpfull print the tool's
        docstring and options and exit 0; a flag error prints absl's one-line FATAL message
        and exits 1. Returns the arguments that are not flags."""
        for arg in argv[1:]:
            if arg == "--":
                break
            if arg in _HELP_ARGUMENTS:
                doc = sys.modules["__main__"].__doc__ or f"USAGE: {argv[0]} [flags]\n"
                sys.stdout.write(f"{doc.rstrip()}\n\nflags:\n"
                                 f"{self.help_text(_HELP_ARGUMENTS[arg] == 'full')}\n")
                sys.exit(0)
        try:
            rest = self(argv)
        except flags.Error as e:
            sys.stderr.write(f"FATAL Flags parsing error: {e}\n"
                             f"Pass --helpshort or --helpfull to see help on flags.\n")
            sys.exit(1)
        # absl.app reads its own flags (--pdb, --run_with_profiling, ...) from the global FLAGS.
        flags.FLAGS.mark_as_parsed()
        return rest
