r"""``janus-vln instruct "..."``: give the navigator an instruction that is never lost.

``ros2 topic pub --once`` publishes before discovery has matched the navigator and exits, so
the message is often lost (1 of 6 arrived in a test). This command:

1. subscribes to the navigator's ``~/status`` and creates the instruction publisher (reliable,
   transient local, depth 1: the navigator's QoS);
2. waits until the navigator's instruction subscription has matched (``--timeout``);
3. publishes, keeping the sample latched while it waits until a status record of the navigator
   shows the instruction (a new episode), then exits 0 with one line saying so (stdout);
4. on a timeout, writes ``janus-vln instruct: error: <what did not happen>`` (one line, stderr)
   and exits 1; an empty instruction or a bad option exits 2, Ctrl-C 130.

::

    janus-vln instruct "Walk past the sofa and stop at the kitchen door."
    janus-vln instruct --namespace /robot1 --timeout 20 "Go to the bedroom."

The navigator keeps its instruction subscription in every lifecycle state, so an instruction
given before it is configured is acknowledged (its state is in the output line) and used once
it is active. Run it with the navigator's ``ROS_DOMAIN_ID`` and discovery range.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from janus_core.console import ArgumentParser, add_verbose, fail, interrupted, setup_logging

EXIT_NOT_DELIVERED = 1  # no navigator subscribed, or none acknowledged


class InstructError(RuntimeError):
    """The instruction could not be delivered or was not acknowledged; the text says which."""


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="janus-vln instruct",
        description="Send the navigator an instruction and wait until it has it.",
    )
    p.add_argument("instruction", help="the instruction text (a new episode starts)")
    p.add_argument("--namespace", default="", help="the navigator's namespace (e.g. /robot1)")
    p.add_argument("--topic", default="instruction",
                   help="instruction topic, relative to the namespace (default: instruction)")
    p.add_argument("--navigator", default="navigator",
                   help="the navigator's node name, for its ~/status (default: navigator)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for the navigator, then again for its acknowledgement")
    return add_verbose(p)


def _join(namespace: str, name: str) -> str:
    if name.startswith("/"):
        return name
    namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{namespace}/{name}"


def send(text: str, namespace: str = "", topic: str = "instruction",
         navigator: str = "navigator", timeout: float = 10.0) -> str:
    """Publish ``text`` latched until the navigator's status shows it; the confirmation line.

    Raises :class:`InstructError` (one line) when no navigator subscribes within ``timeout``
    seconds or none acknowledges within another ``timeout`` seconds.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from std_msgs.msg import String

    from janus_vln_ros.status import NavigatorStatus

    text = text.strip()
    topic_name, status_name = _join(namespace, topic), _join(namespace, f"{navigator}/status")
    latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    status_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                            reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.VOLATILE)
    context = Context()
    rclpy.init(args=[], context=context, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = rclpy.create_node(f"janus_instruct_{os.getpid()}", context=context,
                                 start_parameter_services=False)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        statuses: list[NavigatorStatus] = []

        def on_status(msg):
            try:
                statuses.append(NavigatorStatus.from_json(msg.data))
            except ValueError:
                pass

        node.create_subscription(String, status_name, on_status, status_qos)
        publisher = node.create_publisher(String, topic_name, latched)

        def spin_until(predicate, seconds: float) -> bool:
            deadline = time.monotonic() + seconds
            while not predicate():
                if time.monotonic() >= deadline:
                    return False
                executor.spin_once(timeout_sec=0.05)
            return True

        if not spin_until(lambda: publisher.get_subscription_count() > 0, timeout):
            raise InstructError(
                f"no navigator subscribes to {topic_name} after {timeout:g} s (is it running, "
                f"with this ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')} and discovery "
                "range?)"
            )
        # let the status subscription match too, so the acknowledgement is not missed
        spin_until(lambda: node.count_publishers(status_name) > 0, min(timeout, 2.0))
        spin_until(lambda: False, 0.1)
        seen = max((s.episode for s in statuses), default=None)
        start = len(statuses)
        publisher.publish(String(data=text))

        def acknowledged():
            return any(
                s.instruction == text and (seen is None or s.episode > seen)
                for s in statuses[start:]
            )

        if not spin_until(acknowledged, timeout):
            raise InstructError(
                f"{status_name} did not show the instruction within {timeout:g} s after it was "
                f"published on {topic_name} (is the node there a janus_vln_ros navigator?)"
            )
        status = next(s for s in statuses[start:] if s.instruction == text)
        line = f"{_join(namespace, navigator)}: episode {status.episode}: {text!r}"
        if status.state != "active":
            line += f" (state {status.state}: it starts when the node is configured and active)"
        executor.shutdown()
        node.destroy_node()
        return line
    finally:
        context.try_shutdown()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``janus-vln instruct``; 0 when acknowledged, 1 on a timeout, 2 on usage."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    setup_logging(args.verbose)
    if not args.instruction.strip():
        return fail("instruct", "the instruction is empty (to stop the robot call the "
                    "navigator's ~/stop service)")
    if not args.timeout > 0:
        return fail("instruct", f"--timeout must be > 0, got {args.timeout}")
    try:
        line = send(args.instruction, args.namespace, args.topic, args.navigator, args.timeout)
    except InstructError as err:
        return fail("instruct", err, code=EXIT_NOT_DELIVERED)
    except KeyboardInterrupt:
        return interrupted("instruct", "the instruction may or may not have arrived; check the "
                           "navigator's ~/status")
    sys.stdout.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
