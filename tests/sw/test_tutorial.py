"""docs/tutorial.md cannot drift from the CLI: every ``$ addershift ...`` command line in its fenced
code blocks must be accepted by the argument parser (``sw/cli.py:build_parser``), parsed, never run.

Conventions the tutorial keeps, so that commands can be told from their output: a command starts
with the prompt ``$ ``; a line may continue with a trailing backslash; ``# comments`` and a trailing
``&`` are allowed, other shell syntax is not. Lines of output that start with ``addershift`` are
the CLI's one-line errors (``addershift build: ...``).
"""

import argparse
import pathlib
import re
import shlex

import pytest

from addershift.sw.cli import build_parser

TUTORIAL = pathlib.Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
# The subcommands the tutorial walks through, in order (step 1 to step 6).
WALKED = ["train", "import", "quantize", "predict", "simulate", "generate", "serve-sim", "run",
          "build", "program"]


def fenced_lines(text):
    """``(line number, line)`` of every line inside a fenced code block."""
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside:
            yield number, line


def commands(text):
    """``(line number, command text)`` of every ``$ addershift ...`` command, continuations joined."""
    found, pending, start = [], None, 0
    for number, line in fenced_lines(text):
        if pending is not None:
            pending += " " + line.strip()
        elif line.startswith("$ "):
            pending, start = line[2:].strip(), number
        else:
            # An output line that looks like a command is a command without its prompt.
            words = line.split()
            if words and _is_addershift(words[0]) and len(words) > 1 and not words[1].endswith(":"):
                raise AssertionError(f"docs/tutorial.md:{number}: a command without the '$ ' "
                                     f"prompt: {line.strip()!r}")
            continue
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        found.append((start, pending))
        pending = None
    assert pending is None, f"docs/tutorial.md:{start}: the command ends in a line continuation"
    return [(n, c) for n, c in found if _is_addershift(shlex.split(c, comments=True)[0])]


def _is_addershift(word):
    return word.rsplit("/", 1)[-1] == "addershift"


def _strict(parser):
    """The parser and all its subparsers without prefix matching: ``--epoch`` is not ``--epochs``."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _strict(sub)
    return parser


def parse(command):
    """Parse one command line (the text after ``$ ``) with the CLI's parser; raises ``ValueError``
    naming the problem if the parser refuses it."""
    words = shlex.split(command, comments=True)
    if words and words[-1] == "&":
        words = words[:-1]
    elif words and words[-1].endswith("&"):
        words[-1] = words[-1][:-1]
    shell = [w for w in words if re.fullmatch(r"\d*[<>|;&]+.*|.*[|;]", w)]
    if shell:
        raise ValueError(f"shell syntax {shell[0]!r} in a tutorial command (keep commands plain)")
    parser = _strict(build_parser())
    parser.exit_on_error = False
    try:
        args = parser.parse_args(words[1:])
    except SystemExit as e:     # argparse's own errors (and --help) exit
        raise ValueError(f"the parser refused it (exit status {e.code})") from None
    except argparse.ArgumentError as e:
        raise ValueError(str(e)) from None
    if not callable(getattr(args, "func", None)):
        raise ValueError("no subcommand")
    return args


def test_every_tutorial_command_parses(capsys):
    found = commands(TUTORIAL.read_text())
    bad = []
    for number, command in found:
        try:
            parse(command)
        except ValueError as e:
            bad.append(f"docs/tutorial.md:{number}: {command}\n    {e}\n    "
                       f"{capsys.readouterr().err.strip().splitlines()[-1:]}")
    assert not bad, "tutorial commands the CLI does not accept:\n" + "\n".join(bad)


def test_the_tutorial_walks_every_step():
    used = [parse(c).command for _, c in commands(TUTORIAL.read_text())]
    missing = [name for name in WALKED if name not in used]
    assert not missing, f"docs/tutorial.md shows no command for: {', '.join(missing)}"


@pytest.mark.parametrize("command", [
    "addershift train --epoch 3 -o m.npz",                  # misspelt (and a prefix of --epochs)
    "addershift train --pe adders -o m.npz",                # not a choice
    "addershift compile -m m.npz",                          # no such subcommand
    "addershift simulate --images 5",                       # -m is required
    "addershift run -m m.npz",                              # --port or --sim is required
    "addershift build --board icebreaker --rows two",       # not an integer
    "addershift generate --unit accelerator -o a.v 2>log",  # shell syntax
])
def test_the_check_can_fail(command, capsys):
    with pytest.raises(ValueError):
        parse(command)


def test_extraction():
    text = "\n".join([
        "text $ addershift not-in-a-block",
        "```",
        "$ addershift train --pe adder \\",
        "    --epochs 3 -o m.npz   # a comment",
        "float accuracy 95.28%, ...",
        "addershift build: timing not met on icebreaker",
        "$ .venv/bin/addershift serve-sim --port 7791 -m m.npz &",
        "$ kill %1",
        "```",
    ])
    assert commands(text) == [(3, "addershift train --pe adder --epochs 3 -o m.npz   # a comment"),
                              (7, ".venv/bin/addershift serve-sim --port 7791 -m m.npz &")]
    assert parse(commands(text)[1][1]).port == 7791
    with pytest.raises(AssertionError, match="without the '\\$ ' prompt"):
        commands("```\naddershift train -o m.npz\n```")
