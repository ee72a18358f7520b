"""The conventions every command's parser follows: no abbreviated options, every default in the
help, one-line errors.

argparse by default takes any unambiguous prefix of an option, so timm's `--drop 0.3` (dropout)
would silently set `--drop-path` and `--lr-base 256` `--lr-base-batch`; `Parser` refuses them.
Sub-command parsers (add_subparsers) are built with the same class, so they follow it too.
"""

from __future__ import annotations

import argparse
import difflib
import re


def shown(value) -> str:
    """A default as it would be typed: lists space-separated, as nargs options take them."""
    if isinstance(value, (list, tuple)):
        return " ".join(shown(item) for item in value) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return format(value, ".6g")
    return str(value)


def walk(parser: argparse.ArgumentParser):
    """`parser` and, depth first, the parsers of its sub-commands."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from walk(sub)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends `(default: X)` to each option that takes a value, unless its help already says
    what the default is (`(default: what unset means)`, replaced by a value once one is set);
    an action's `per_mode` text (the trainer's recipe defaults) stands for an unset value."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        if "(default: " in text and "%(default)" not in text:
            if action.default is None or (action.nargs == 0 and action.default is False):
                return text  # the help says what unset means
            # a value set in place of unset (a config's, a mode's) is the default now
            value = shown(action.default).replace("%", "%%")
            return re.sub(r"\(default: [^)]*\)", lambda _: f"(default: {value})", text)
        if "default" in text:
            return text
        per_mode = getattr(action, "per_mode", None)
        if per_mode is not None and action.default is None:
            return f"{text} (default: {per_mode.replace('%', '%%')})"
        flag = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
        if action.default is None or (flag and action.default is False):
            return text
        # % would start a format field in argparse's help expansion
        return f"{text} (default: {shown(action.default).replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser without abbreviations, with defaults in the help and one-line errors."""

    def __init__(self, *args, allow_abbrev=False, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, allow_abbrev=allow_abbrev, formatter_class=formatter_class,
                         **kwargs)

    def explained(self, message: str) -> str:
        """argparse's message, with the options an unrecognised (e.g. abbreviated) one is close to."""
        choice = re.fullmatch(r"argument (\S+): invalid choice: (.*) \(choose from (.*)\)", message)
        if choice:  # as the project's own checks say it: option, value, what is allowed
            allowed = [item.strip("'") for item in choice[3].split(", ")]
            return (f"{choice[1].split('/')[0]}: {choice[2]} is not allowed; expected "
                    + (", ".join(allowed[:-1]) + " or " + allowed[-1] if len(allowed) > 1 else allowed[0]))
        unknown = message.partition("unrecognized arguments: ")[2].split(" ")[0].split("=")[0]
        if not unknown.startswith("-"):
            return message
        known = [option for parser in walk(self) for action in parser._actions
                 for option in action.option_strings]
        close = [option for option in known if option.startswith(unknown)]
        close = close or difflib.get_close_matches(unknown, known, n=3)
        return f"{message} (did you mean {', '.join(close[:3])}?)" if close else message

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {self.explained(message)}\n")
