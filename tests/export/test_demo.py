"""The README's main command really trains, exports and drives the runtime."""

import re

from tests.conftest import run_python


def test_demo_trains_exports_and_runs(tmp_path):
    proc = run_python("-m", "export.demo", "--out", str(tmp_path / "demo"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "PASS"):
        assert step in proc.stdout
    agree, total = map(int, re.search(r"demonstrated way .* on (\d+)/(\d+) frames", proc.stdout).groups())
    assert agree >= 0.75 * total, proc.stdout[-1500:]
    demo = tmp_path / "demo"
    assert (demo / "bundle" / "bundle.json").is_file() and (demo / "checkpoint" / "config.json").is_file()
    assert (demo / "runs" / "blocks" / "curves.png").is_file()
