"""The ``janus-vln`` command: one entry point for every job, each subcommand in its own module.

Subcommands are imported lazily, so ``janus-vln eval`` works on a machine without ROS and
``janus-vln record`` works without the training stack.
"""

from __future__ import annotations

import importlib
import logging
import sys

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
}


def usage() -> str:
    """The help text listing every subcommand."""
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items())
    return f"usage: janus-vln <command> [options]\n\ncommands:\n{rows}\n"


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default: ``sys.argv[1:]``) to a subcommand and return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"janus-vln: unknown command {name!r}\n\n{usage()}")
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    module_name, function, _ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        sys.stderr.write(
            f"janus-vln {name}: cannot import {module_name} ({err}). Install the full profile: "
            "scripts/setup.sh\n"
        )
        return 2
    result = getattr(module, function)(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
