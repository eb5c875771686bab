"""The simulator's shortest-path expert behind the navigator's Policy interface, over ROS.

``RosExpertPolicy`` is what the navigator builds for ``model: expert:ros``. Each ``act`` asks
the sim_bridge's ``~/expert_action`` service (std_srvs/Trigger) for the expert's next action and
checks that the answer is about the very observation being acted on (the stamp the bridge put on
the frame), so the navigator drives the simulator exactly as the in-process ``expert`` baseline
does, through every topic, conversion and handshake a learned policy goes through.

The policy runs its own rclpy Context, node and executor thread, so it works inside any process
(the navigator's worker thread calls ``act``). Its service name is resolved in the namespace the
process was started in (``-r __ns:=...``, read from the arguments), so ``expert:ros`` finds
``<ns>/sim_bridge/expert_action`` without extra arguments; ``expert:ros:<service>`` names
another service.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence

from janus_core.actions import Action
from janus_core.interface import Observation, Policy, StepResult

DEFAULT_SERVICE = "sim_bridge/expert_action"
SPEC_PREFIX = "expert:ros"


class RosExpertError(RuntimeError):
    """The sim_bridge's expert could not be asked or answered about another observation."""


def parse_spec(spec: str) -> str:
    """The service name in ``expert:ros[:<service>]``."""
    if spec == SPEC_PREFIX:
        return DEFAULT_SERVICE
    if not spec.startswith(SPEC_PREFIX + ":") or not spec[len(SPEC_PREFIX) + 1:].strip():
        raise ValueError(f"model {spec!r}: expected expert:ros or expert:ros:<service name>")
    return spec[len(SPEC_PREFIX) + 1:].strip()


def process_namespace(argv: Sequence[str]) -> str:
    """The namespace a ``-r __ns:=NS`` rule in ``argv``'s ``--ros-args`` gives every node.

    The first such rule counts, as in rcl; node-specific rules (``name:__ns:=NS``) are not
    looked at. ``/`` without one.
    """
    inside = False
    args = iter(argv)
    for arg in args:
        if arg == "--ros-args":
            inside = True
        elif arg == "--":
            inside = False
        elif inside and arg in ("-r", "--remap"):
            rule = next(args, "")
            if rule.startswith("__ns:="):
                namespace = rule[len("__ns:="):].strip()
                return namespace if namespace.startswith("/") else "/" + namespace
    return "/"


class RosExpertPolicy(Policy):
    """Asks the sim_bridge for the expert's action for each observation (see module docstring).

    ``timeout``: seconds to wait for the service (at the first call) and for each answer.
    ``argv``: the process arguments whose ``--ros-args`` give the namespace (default sys.argv).
    """

    def __init__(self, service: str = DEFAULT_SERVICE, timeout: float = 10.0,
                 argv: list[str] | None = None):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.signals import SignalHandlerOptions
        from std_srvs.srv import Trigger

        self.timeout = float(timeout)
        self._trigger = Trigger
        self._context = Context()
        rclpy.init(args=list(sys.argv if argv is None else argv), context=self._context,
                   signal_handler_options=SignalHandlerOptions.NO)
        try:
            # no probe node to ask rcl for it: destroying a short-lived node once hung in
            # rclpy's destroy_when_not_in_use (seen in CI, the navigator stuck at 100 % CPU)
            namespace = process_namespace(sys.argv if argv is None else argv)
            self._node = Node("expert_client", namespace=namespace, context=self._context,
                              use_global_arguments=False, start_parameter_services=False)
            self._client = self._node.create_client(Trigger, service)
            self.service = self._client.service_name
            self._executor = SingleThreadedExecutor(context=self._context)
            self._executor.add_node(self._node)
        except Exception:
            self._context.try_shutdown()
            raise
        self._thread = threading.Thread(target=self._spin, name="expert-client", daemon=True)
        self._thread.start()
        self._step = 0

    @classmethod
    def from_spec(cls, spec: str) -> RosExpertPolicy:
        """Build from ``expert:ros[:<service>]``."""
        return cls(parse_spec(spec))

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass

    def reset(self, instruction: str) -> None:
        """Start an episode (the expert needs no instruction)."""
        self._step = 0

    def act(self, observation: Observation) -> StepResult:
        """The expert action for ``observation`` (matched by its header stamp)."""
        start = time.perf_counter()
        if not self._client.wait_for_service(timeout_sec=self.timeout):
            raise RosExpertError(f"service {self.service} is not available (is sim_bridge up?)")
        future = self._client.call_async(self._trigger.Request())
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(self.timeout):
            self._client.remove_pending_request(future)
            raise RosExpertError(f"service {self.service} did not answer in {self.timeout} s")
        response = future.result()
        if response is None or not response.success:
            why = response.message if response is not None else "no response"
            raise RosExpertError(f"{self.service}: {why}")
        answer = json.loads(response.message)
        if observation.stamp and abs(float(answer["stamp"]) - observation.stamp) > 2e-6:
            raise RosExpertError(
                f"{self.service} answered for the frame stamped {answer['stamp']:.6f}, but the "
                f"policy was given the frame stamped {observation.stamp:.6f}"
            )
        self._step += 1
        action = Action.from_name(answer["action"])
        return StepResult(action=action, timings={"expert": time.perf_counter() - start},
                          text=action.name, step=self._step)

    def close(self) -> None:
        """Stop the executor thread and shut the private context down."""
        self._executor.shutdown()
        self._thread.join(timeout=5.0)
        self._node.destroy_node()
        self._context.try_shutdown()
