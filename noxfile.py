"""Developer sessions: ``nox -s tests lint typecheck integration parity benchmarks``."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
PACKAGES = ["dicomslide", "dicomslide_sync"]


@nox.session
def tests(session: nox.Session) -> None:
    """Unit, async and sync tests (integration tests skip without Orthanc unless CI is set)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "not integration", *session.posargs)


@nox.session
def integration(session: nox.Session) -> None:
    """Tests against a private Orthanc and third-party converter output.

    Needs the system packages that .ci/install-system.sh installs.
    """
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "integration", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", *PACKAGES, "tests", "benchmarks")
    session.run("ruff", "format", "--check", *PACKAGES, "tests", "benchmarks")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on both packages."""
    session.install("-e", ".[test,lint]")
    session.run("mypy", "--strict", *PACKAGES)


@nox.session
def parity(session: nox.Session) -> None:
    """Differential run against dicomslide 0.7.2 (own venv, from PyPI); prints the summary.

    Fails on any difference that is not in tests/parity/known.py (and the README table).
    """
    session.install("-e", ".[test]")
    session.run("python", "-m", "tests.parity.harness", *session.posargs)


@nox.session
def benchmarks(session: nox.Session) -> None:
    """The published benchmark: peers in their own venv, results in benchmarks/RESULTS.md."""
    session.install("-e", ".[test,fast]")
    if "--scale" in session.posargs:  # the scale curve (benchmarks/scale.py), peers in-process
        session.run("python", "benchmarks/scale.py", *session.posargs)
        return
    session.run("python", "benchmarks/setup_peers.py")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Fuzzing at scale: >= 10,000 inputs (metadata, multipart, frames, Part 10); prints the count.

    Issue 18. About a minute (15,003 inputs at scale 8); the regular suite runs the same module
    with its quick profile (scale 1, ~1,900 inputs).
    """
    session.install("-e", ".[test]")
    env = {"DICOMSLIDE_FUZZ_SCALE": "8", "DICOMSLIDE_FUZZ_MINIMUM": "10000"}
    session.run("pytest", "tests/unit/test_fuzz.py", "-p", "no:randomly", "-rA", env=env)
