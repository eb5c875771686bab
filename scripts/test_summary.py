"""Print one plain line ``N passed, N failed, N skipped`` from a pytest JUnit XML file."""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def main(path: str) -> int:
    """Summarise ``path``; exit status 1 when the file is missing or anything failed."""
    if not Path(path).exists():
        print(f"0 passed, 0 failed (no test results at {path})")
        return 1
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    passed = total - failed - skipped
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or total == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/janus_vln_ros/pytest.xml"))
