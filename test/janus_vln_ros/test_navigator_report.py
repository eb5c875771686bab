"""Quiet, truthful reporting by a real navigator process while its policy keeps failing.

The policy is down for its first 6 calls (the same error each time, ``down=6``) with a 0.1 s
retry doubling up to 0.4 s: one ERROR line in the log, /diagnostics ERROR from the first
failure until the first successful step (no flapping), then OK; no status record published
twice in a row, no zero command twice in a row; the image error is cleared once frames are
valid again; the action is cleared by ~/stop and ~/reset.
"""

from __future__ import annotations

import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_harness import NavigatorUnderTest, frame, is_zero
from ros_harness import RosHarness, qos, wait_until
from std_msgs.msg import String
from std_srvs.srv import Trigger

from janus_vln_ros.conversions import numpy_to_image

PARAMS = dict(model="constant:MOVE_FORWARD:0:down=6", autostart=True, forward_distance=0.05,
              max_linear_speed=0.5, control_rate=50.0, max_steps=0, image_timeout=5.0,
              policy_error_retry=0.1, policy_error_retry_max=0.4, diagnostics_period=0.2)


@pytest.fixture(scope="module")
def harness():
    h = RosHarness("navigator_report_test")
    yield h
    h.close()


def test_failing_policy_is_quiet_and_truthful(harness):
    diagnostics = harness.record(DiagnosticArray, "/diagnostics", qos(50))
    nav = NavigatorUnderTest(harness, "nav_quiet", PARAMS)
    name = "/nav_quiet/navigator: navigator"

    def ours(since=0.0):
        return [(t, s) for t, m in diagnostics.timed_since(since) for s in m.status
                if s.name == name]

    try:
        assert wait_until(lambda: nav.state() == "active", 10.0), nav.proc.log()
        nav.instruction.publish(String(data="through the door"))
        nav.camera.start()
        ok = nav.wait_status(lambda s: s.step >= 1 and s.stop_reason == "none", 15.0)
        assert ok is not None, nav.proc.log()
        t_ok = next(t for t, m in nav.status.timed_since(0.0) if '"step":1' in m.data)
        time.sleep(0.6)
        log = nav.proc.log()
        assert log.count("policy raised RuntimeError: policy unavailable") == 1, log
        assert log.count("[ERROR]") == 1, log

        failures = [s.policy_failures for s in nav.statuses()]
        assert max(failures) == 6 and failures[-1] == 0
        # /diagnostics: ERROR from the first failure until the step that succeeded
        diag = ours()
        first_error = next(i for i, (_, s) in enumerate(diag) if s.level == DiagnosticStatus.ERROR)
        during = [s for t, s in diag[first_error:] if t < t_ok - 0.05]
        assert len(during) >= 5 and all(s.level == DiagnosticStatus.ERROR for s in during)
        assert all("policy unavailable" in s.message for s in during)
        assert [s for t, s in diag if t > t_ok + 0.3][-1].level == DiagnosticStatus.OK

        records = [m.data for m in nav.status.messages]
        assert all(a != b for a, b in zip(records, records[1:])), "a status published twice"
        cmds = nav.cmd.messages
        assert cmds and not any(is_zero(a) and is_zero(b) for a, b in zip(cmds, cmds[1:]))

        # an invalid frame sets last_image_error; valid frames clear it
        nav.camera.pause()
        bad = numpy_to_image(frame(), "rgb8")
        bad.encoding = "yuv422"
        t_bad = time.monotonic()
        for _ in range(5):
            nav.camera.pub.publish(bad)
            time.sleep(0.1)
        assert any(v.key == "last_image_error" and "yuv422" in v.value
                   for _, s in ours(t_bad) for v in s.values)
        t_good = time.monotonic()
        nav.camera.start()
        assert wait_until(lambda: any(
            all(v.value == "" for v in s.values if v.key == "last_image_error")
            for t, s in ours(t_good) if t > t_good + 0.3), 3.0)

        # ~/stop and ~/reset clear the action
        t_stop = time.monotonic()
        assert harness.call(Trigger, f"{nav.node}/stop").success
        stopped = nav.wait_status(lambda s: s.stop_reason == "stopped", 3.0, since=t_stop)
        assert stopped is not None and stopped.action == ""
        t_reset = time.monotonic()
        assert harness.call(Trigger, f"{nav.node}/reset").success
        reset = nav.wait_status(lambda s: s.step == 0, 3.0, since=t_reset)
        assert reset is not None and reset.action == ""
    finally:
        nav.close()
