"""The ``janus-vln`` command: one entry point for every job, each subcommand in its own module.

Subcommands are imported lazily, so ``janus-vln eval`` works on a machine without ROS and
``janus-vln record`` works without the training stack. Every subcommand follows the habits of
:mod:`janus_core.console`: tables on stdout, logs on stderr, ``-v`` for DEBUG logs, one line
``janus-vln <command>: error: ...`` and a non-zero exit code for a mistake. An exception no
subcommand expected (a bug) is also reported in one line; its traceback goes to a file named
in that line (and to stderr with ``-v``).
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import traceback

from janus_core.console import PROG, fail, interrupted, one_line, setup_logging

# subcommand -> (module, function taking argv, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("janus_vln_ros.demo", "main", "run one episode with the shipped model, write an mp4"),
    "eval": ("sim_bridge.evaluate", "main", "evaluate a policy on a VLN-CE split"),
    "merge": ("sim_bridge.evaluate", "merge_main", "merge sharded evaluation results"),
    "generate": ("sim_bridge.generate", "main", "generate embedded VLN-CE episode splits"),
    "render": ("sim_bridge.render_scene", "main", "render a scene's views and top-down map"),
    "collect": ("training.collect", "main", "roll the expert through a split, write trajectories"),
    "train": ("training.sft", "main", "supervised fine-tuning (SFT)"),
    "dagger": ("training.dagger", "main", "DAgger rounds: the model drives, the expert corrects"),
    "record": ("janus_vln_ros.bag", "record_main", "record the navigator's topics to MCAP"),
    "replay": ("janus_vln_ros.bag", "replay_main", "replay a bag through a policy offline"),
    "sim-eval": ("janus_vln_ros.sim_eval", "main", "evaluate through the ROS nodes"),
    "instruct": ("janus_vln_ros.instruct", "main",
                 "give the navigator an instruction and wait until it has it"),
}
VERBOSE_FLAGS = ("-v", "--verbose")


def usage() -> str:
    """The help text listing every subcommand."""
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items())
    return (f"usage: {PROG} <command> [options]\n\ncommands:\n{rows}\n\n"
            f"{PROG} <command> --help shows a command's options; -v (any command) logs more.\n")


def _report_bug(name: str, err: BaseException, verbose: bool) -> int:
    """One line for an unexpected exception; the traceback into a file (and stderr with -v)."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    where = "rerun with -v to see where"
    try:
        fd, path = tempfile.mkstemp(prefix=f"{PROG}-{name}-", suffix=".traceback.txt")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        where = f"details in {path}"
    except OSError:
        pass
    code = fail(name, f"unexpected {type(err).__name__}: {one_line(err)} ({where})", code=1)
    if verbose:
        sys.stderr.write(text)
    return code


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default: ``sys.argv[1:]``) to a subcommand and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"{PROG}: unknown command {name!r}\n\n{usage()}")
        return 2
    verbose = any(arg in VERBOSE_FLAGS for arg in rest)
    setup_logging(verbose)
    module_name, function, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        return fail(name, f"cannot import {module_name} ({err}); install the full profile: "
                    "scripts/setup.sh")
    try:
        result = getattr(module, function)(rest)
    except KeyboardInterrupt:
        return interrupted(name, "stopped before it finished")
    except SystemExit:
        raise  # argparse's usage errors (exit 2) and --help (exit 0)
    except Exception as err:  # noqa: BLE001 - a bug must still end in one line (see docstring)
        return _report_bug(name, err, verbose)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
