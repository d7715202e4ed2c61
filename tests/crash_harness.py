"""Killing a `labelgov` command with SIGKILL at a chosen moment of its work, and tallying where kills landed.

The delay is counted from the moment the process has the warehouse file open (seen in /proc/PID/fd), not
from its start: importing the command line takes seconds on a busy machine, and kills that land before
the warehouse is touched prove nothing. Delays are drawn stratified over the measured working time, so
a handful of kill points still spreads from the first read to the final commit; a kill that comes after
the command already finished (it ran faster than when measured) shortens the span and is drawn again.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPEN_TIMEOUT_S = 120.0
POLL_S = 0.005


def command(*args: str) -> list[str]:
    """The installed entry point's code path, run by this interpreter (killing it kills the command)."""
    return [sys.executable, "-m", "dashboard.cli", *args]


def _holds(pid: int, target: str) -> bool:
    folder = Path("/proc") / str(pid) / "fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(folder / name) == target:
                return True
        except OSError:
            continue
    return False


def _start(args: list[str], db: Path, logs: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "LABELGOV_USER": "crash-test"}
    with (logs.with_suffix(".out")).open("wb") as out, (logs.with_suffix(".err")).open("wb") as err:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=err)


def _wait_open(proc: subprocess.Popen[bytes], db: Path) -> float:
    """Block until the process has the warehouse open (or has already exited); the moment it was seen."""
    target = str(db.resolve())
    deadline = time.monotonic() + OPEN_TIMEOUT_S
    while proc.poll() is None and not _holds(proc.pid, target):
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{proc.args} did not open {db} within {OPEN_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
    return time.monotonic()


def working_time(args: list[str], db: Path) -> float:
    """Run the command to completion once; seconds from opening the warehouse to exiting."""
    proc = _start(args, db, db.with_name(db.stem + "-measure"))
    opened = _wait_open(proc, db)
    code = proc.wait()
    elapsed = time.monotonic() - opened
    err = db.with_name(db.stem + "-measure.err").read_text(errors="replace")
    assert code == 0, f"{args} failed before any kill: {err}"
    return elapsed


@dataclass(frozen=True)
class KillPoint:
    delay: float  # seconds after the warehouse was opened
    mid_run: bool  # the process was still running when the signal was sent
    wal_left: bool  # a write-ahead log was left for the next opener to replay


def kill_after(args: list[str], db: Path, delay: float) -> KillPoint:
    """Start the command, SIGKILL it ``delay`` seconds into its work, and reap it."""
    logs = db.with_name(db.stem + "-killed")
    proc = _start(args, db, logs)
    opened = _wait_open(proc, db)
    time.sleep(max(0.0, opened + delay - time.monotonic()))
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)  # an exit just before this leaves a zombie: the kill is harmless
    code = proc.wait()
    mid_run = code == -signal.SIGKILL
    err = logs.with_suffix(".err").read_text(errors="replace")
    assert mid_run or code == 0, f"{args} ended with exit code {code} before the kill: {err}"
    wal = db.with_name(db.name + ".wal")
    return KillPoint(delay, mid_run, wal.exists() and wal.stat().st_size > 0)


def delay_in_slice(rng: random.Random, slot: int, count: int, span: float) -> float:
    """A uniform draw inside slice ``slot`` of ``count`` equal slices of ``span``: kills spread over the work."""
    return span * (slot + rng.random()) / count


@dataclass
class Tally:
    """Per command: kill points tried, landed while it ran, left a WAL, and whose invariants all held."""

    name: str
    tried: int = 0
    mid_run: int = 0
    wal_left: int = 0
    committed: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, point: KillPoint, committed: bool, failure: str | None) -> None:
        self.tried += 1
        self.mid_run += point.mid_run
        self.wal_left += point.wal_left
        self.committed += committed
        if failure is not None:
            self.failures.append(f"kill at {point.delay:.2f} s: {failure}")

    @property
    def survived(self) -> int:
        return self.tried - len(self.failures)

    def summary(self) -> str:
        return (
            f"crash {self.name}: {self.tried} kill points, {self.mid_run} landed mid-run, {self.wal_left} left a "
            f"WAL, {self.committed} found the write committed, {self.survived} survived"
        )
