"""Run a private, throw-away Orthanc server with the DICOMweb plugin for tests and benchmarks.

Each :class:`OrthancServer` is its own ``Orthanc`` process with its own JSON configuration,
SQLite index and storage folder in a temporary directory, listening for HTTP on a free
``127.0.0.1`` port (no DICOM port, no remote access, no authentication).  It never uses nor
touches the system-wide Debian ``orthanc`` service.

Lifetime: the process is stopped by :meth:`OrthancServer.stop`, by leaving the ``with`` block,
by an :mod:`atexit` hook for every server still running when the interpreter exits, and, should
the Python process die without running any of these (``SIGKILL``, a crash), by the kernel:
Orthanc is started with ``PR_SET_PDEATHSIG`` so it receives ``SIGTERM`` when the thread that
started it ends.  Hence start servers from the main thread or a long-lived one (pytest fixtures
are fine), never from a short-lived worker thread.

Manual use (benchmarks, poking with curl)::

    python -m tests.support.orthanc --folder path/to/slide [--folder other] [--port 8042]

uploads the DICOM files below the folders, prints the DICOMweb URL and serves until Ctrl-C
or SIGTERM.

Observed with Debian bookworm's ``orthanc`` 1.10.1 + ``orthanc-dicomweb`` 1.7 on
OrthancWSIDicomizer output (JPEG baseline, JPEG 2000 lossless, Implicit VR Little Endian):

* ``GET .../frames/1,2,3`` with ``Accept: multipart/related; type="application/octet-stream";
  transfer-syntax=*`` works for all three and returns the stored frame bytes unchanged
  (including the even-length padding byte of an odd-sized JPEG 2000 frame), parts in
  request order.  The quotes around the ``type`` value are optional.
* The response's outer header names the *actual* media type and the transfer syntax *inside*
  the quoted ``type`` parameter, not as a separate parameter:
  ``multipart/related; type="image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50";
  boundary=<72-char UUID pair>``; likewise ``type="image/jp2;
  transfer-syntax=1.2.840.10008.1.2.4.90"`` (a raw J2K codestream ``FF4F...``, not a JP2
  file) and ``type="application/octet-stream; transfer-syntax=1.2.840.10008.1.2"``.
* Each part carries ``Content-Location`` (absolute frame URL), ``Content-Type: image/jpeg;
  transfer-syntax=1.2.840.10008.1.2.4.50`` (resp. ``image/jp2; ...4.90``,
  ``application/octet-stream; ...1.2``), ``Content-Length`` and ``MIME-Version: 1.0``;
  the body is followed by ``\r\n`` before the next delimiter, closing with ``--boundary--``.
* Without ``transfer-syntax=*`` Orthanc transcodes: ``type="application/octet-stream"`` (or
  ``*/*``) gives Explicit VR Little Endian (``1.2.840.10008.1.2.1``) for JPEG/uncompressed
  and HTTP 500 "Cannot transcode image" for JPEG 2000; ``type="image/jpeg"`` gives JPEG
  *lossless* ``1.2.840.10008.1.2.4.70``; ``type="image/jp2"`` returns the stored J2K.
  ``type="image/jpeg"; transfer-syntax=*``, ``type="image/jp2"; transfer-syntax=*``,
  ``type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.4.90`` and a bare
  ``Accept: application/octet-stream`` are all answered with HTTP 400.
* Series ``/metadata`` has no Pixel Data element (no BulkDataURI); QIDO answers
  ``application/dicom+json``.
* Start-up (``GET /system`` answering) takes ~0.15 s; storing a 4-instance 2048x1536 slide
  ~0.05 s; 48 frames in one multipart request ~20 ms vs. ~90 ms as 48 single-frame
  requests on one keep-alive connection.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpx

from tests.support.lifecycle import StartStop

if TYPE_CHECKING:
    import pytest

__all__ = [
    "OrthancNotAvailableError",
    "OrthancServer",
    "OrthancStartError",
    "find_dicomweb_plugin",
    "find_orthanc",
    "main",
]

#: Environment variables overriding where the Orthanc binary and the DICOMweb plugin are.
ORTHANC_BINARY_ENV = "DICOMSLIDE_ORTHANC"
DICOMWEB_PLUGIN_ENV = "DICOMSLIDE_ORTHANC_DICOMWEB_PLUGIN"

_PLUGIN_CANDIDATES = (
    # Debian/Ubuntu package orthanc-dicomweb.
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    # Official Docker images and self-built installs.
    "/usr/share/orthanc/plugins-available/libOrthancDicomWeb.so",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
)
_STARTUP_TIMEOUT = 30.0
_PORT_ATTEMPTS = 3


# Servers still running; the atexit hook stops them so no Orthanc outlives the test session.
class _Written(Protocol):
    root: Path


_W = TypeVar("_W", bound=_Written)
_V = TypeVar("_V")

_live_servers: set[OrthancServer] = set()
_live_lock = threading.Lock()


class OrthancNotAvailableError(RuntimeError):
    """The Orthanc binary or its DICOMweb plugin is not installed."""


class OrthancStartError(RuntimeError):
    """Orthanc did not answer ``GET /system`` in time, or exited while starting."""


def find_orthanc() -> str | None:
    """Return the path of the ``Orthanc`` executable, or ``None`` if it is not installed."""
    override = os.environ.get(ORTHANC_BINARY_ENV)
    if override:
        return override if Path(override).is_file() else None
    # Debian installs it in /usr/sbin, which is not on PATH for every user.
    return shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")


def find_dicomweb_plugin() -> Path | None:
    """Return the path of ``libOrthancDicomWeb.so``, or ``None`` if it is not installed."""
    override = os.environ.get(DICOMWEB_PLUGIN_ENV)
    candidates = [override] if override else list(_PLUGIN_CANDIDATES)
    for candidate in candidates:
        path = Path(candidate)
        if path.is_file():
            return path
    return None


def _free_port() -> int:
    # Racy by nature (another process may grab the port before Orthanc binds it); start()
    # retries with a fresh port when Orthanc exits early.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """``preexec_fn``: have the kernel send SIGTERM to Orthanc when our thread dies."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _is_part10(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    for item in paths:
        path = Path(item)
        if path.is_dir():
            # Folders also hold side files (dicomizer.json, sources...): DICOM Part 10 only.
            yield from sorted(p for p in path.rglob("*") if p.is_file() and _is_part10(p))
        else:
            yield path


class OrthancServer(StartStop):
    """A private Orthanc process serving DICOMweb on ``127.0.0.1``.

    Usage::

        with OrthancServer() as server:
            server.upload(paths)
            client = httpx.Client(base_url=server.dicomweb_url)

    Args:
        workdir: Folder for the configuration, index, storage and log.  By default a fresh
            temporary folder that :meth:`stop` deletes; a folder passed in is kept.
        port: HTTP port; by default a free one is picked.
        binary: ``Orthanc`` executable; default: :func:`find_orthanc`.
        plugin: ``libOrthancDicomWeb.so``; default: :func:`find_dicomweb_plugin`.
        startup_timeout: Seconds to wait for ``GET /system`` to answer.
        extra_config: Top-level keys merged over the generated configuration.

    Raises:
        OrthancNotAvailableError: When the binary or the plugin cannot be found.
    """

    def __init__(
        self,
        *,
        workdir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        binary: str | os.PathLike[str] | None = None,
        plugin: str | os.PathLike[str] | None = None,
        startup_timeout: float = _STARTUP_TIMEOUT,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        found_binary = str(binary) if binary is not None else find_orthanc()
        if found_binary is None:
            raise OrthancNotAvailableError(
                f"Orthanc binary not found (install the Debian package 'orthanc' or set "
                f"{ORTHANC_BINARY_ENV})"
            )
        found_plugin = Path(plugin) if plugin is not None else find_dicomweb_plugin()
        if found_plugin is None or not found_plugin.is_file():
            raise OrthancNotAvailableError(
                f"Orthanc DICOMweb plugin not found (install the Debian package "
                f"'orthanc-dicomweb' or set {DICOMWEB_PLUGIN_ENV})"
            )
        self._binary = found_binary
        self._plugin = found_plugin.resolve()
        self._requested_port = port
        self._owns_workdir = workdir is None
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self._workdir: Path | None = None
        self._startup_timeout = startup_timeout
        self._extra_config = dict(extra_config or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    # -- properties -------------------------------------------------------------------------

    @staticmethod
    def _while_running(value: _V | None) -> _V:
        # Port and workdir exist only between start() and stop().
        if value is None:
            raise RuntimeError("Orthanc server is not running")
        return value

    @property
    def port(self) -> int:
        """The HTTP port Orthanc listens on (only valid while running)."""
        return self._while_running(self._port)

    @property
    def base_url(self) -> str:
        """Root of Orthanc's own REST API, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb service root without trailing slash, e.g. ``http://127.0.0.1:40123/dicom-web``."""
        return f"{self.base_url}/dicom-web"

    @property
    def pid(self) -> int | None:
        """PID of the Orthanc process, or ``None`` when not started."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the Orthanc process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def workdir(self) -> Path:
        """Folder holding ``orthanc.json``, ``orthanc.log``, ``index/`` and ``storage/``."""
        return self._while_running(self._workdir)

    @property
    def log_path(self) -> Path:
        """Orthanc's combined stdout/stderr log."""
        return self.workdir / "orthanc.log"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> OrthancServer:
        """Start Orthanc and wait until its REST API answers; return ``self``.

        Raises:
            OrthancStartError: If Orthanc exits or does not answer within the timeout; the
                message carries the tail of Orthanc's log.
        """
        if self.running:
            return self
        if self._workdir_arg is not None:
            self._workdir_arg.mkdir(parents=True, exist_ok=True)
            self._workdir = self._workdir_arg
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="dicomslide-orthanc-"))
        attempts = 1 if self._requested_port is not None else _PORT_ATTEMPTS
        last_error: OrthancStartError | None = None
        for _ in range(attempts):
            port = self._requested_port or _free_port()
            try:
                self._launch(port)
                return self
            except OrthancStartError as exc:
                last_error = exc
                # Only a lost race for the port is worth another try.  Orthanc 1.10 says
                # "The TCP port of the HTTP server is privileged or already in use".
                if "already in use" not in str(exc).lower():
                    break
        # Keep the workdir: the error message points at its log for the full story.
        self._terminate()
        self._port = None
        self._workdir = None
        assert last_error is not None
        raise last_error

    def _config(self, port: int) -> dict[str, Any]:
        workdir = self.workdir
        config: dict[str, Any] = {
            "Name": f"dicomslide-test-{port}",
            "HttpPort": port,
            "HttpServerEnabled": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": False,
            "HttpCompressionEnabled": False,
            "HttpDescribeErrors": True,
            "KeepAlive": True,
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "index"),
            # Speed: no zlib on store/read, keep hot files in RAM, no job persistence.
            "StorageCompression": False,
            "MaximumStorageCacheSize": 256,
            "SaveJobs": False,
            "ConcurrentJobs": 1,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            "OverwriteInstances": True,
            "CheckRevisions": False,
            "MetricsEnabled": False,
            "ExecuteLuaEnabled": False,
            "Plugins": [str(self._plugin)],
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": False,
                "Host": f"127.0.0.1:{port}",
                "Ssl": False,
                "StudiesMetadata": "Full",
                "SeriesMetadata": "Full",
            },
        }
        config.update(self._extra_config)
        return config

    def _launch(self, port: int) -> None:
        workdir = self.workdir
        for sub in ("storage", "index"):
            (workdir / sub).mkdir(exist_ok=True)
        config_path = workdir / "orthanc.json"
        config_path.write_text(json.dumps(self._config(port), indent=2), encoding="utf-8")
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [self._binary, str(config_path)],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Not start_new_session: Ctrl-C in a terminal should reach Orthanc too.
                preexec_fn=_die_with_parent,
            )
        self._port = port
        with _live_lock:
            _live_servers.add(self)
        try:
            self._wait_ready()
        except OrthancStartError:
            self._terminate()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        last_exc: Exception | None = None
        with httpx.Client(base_url=self.base_url, trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert self._process is not None
                code = self._process.poll()
                if code is not None:
                    raise OrthancStartError(
                        f"Orthanc exited with code {code} while starting on port {self._port}; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    if client.get("/system").status_code == 200:
                        return
                except httpx.TransportError as exc:
                    last_exc = exc
                time.sleep(0.05)
        raise OrthancStartError(
            f"Orthanc did not answer GET /system on port {self._port} within "
            f"{self._startup_timeout:.0f} s (last error: {last_exc!r}); "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def _terminate(self, timeout: float = 10.0, *, graceful: bool = True) -> None:
        process, self._process = self._process, None
        with _live_lock:
            _live_servers.discard(self)
        if process is None:
            return
        if process.poll() is None:
            if graceful:
                process.terminate()
                try:
                    process.wait(timeout=timeout)
                    return
                except subprocess.TimeoutExpired:
                    pass
            process.kill()
            process.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0, *, graceful: bool = True) -> None:
        """Stop Orthanc and delete the workdir if it is a temporary one.

        Sends SIGTERM and waits up to ``timeout`` s (Orthanc 1.10 needs ~2.4 s to shut its
        HTTP server down), then SIGKILL.  ``graceful=False`` sends SIGKILL at once, which is
        fine for a throw-away temp workdir.  Safe to call more than once.
        """
        self._terminate(timeout, graceful=graceful)
        self._port = None
        if self._owns_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __del__(self) -> None:
        # Last resort for a forgotten server; stop() is the supported way.
        with contextlib.suppress(Exception):
            self._terminate(timeout=2.0)

    # -- helpers ----------------------------------------------------------------------------

    def client(self, **kwargs: Any) -> httpx.Client:
        """An :class:`httpx.Client` on :attr:`base_url` that ignores proxy variables."""
        kwargs.setdefault("timeout", 60.0)
        return httpx.Client(base_url=self.base_url, trust_env=False, **kwargs)

    def system(self) -> dict[str, Any]:
        """``GET /system`` (contains ``Version``, ``ApiVersion``, ``Name``...)."""
        with self.client() as client:
            response = client.get("/system")
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result

    def upload(self, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
        """Store DICOM files via ``POST /instances``; return Orthanc's instance IDs.

        Args:
            paths: DICOM files (sent as they are), or folders whose DICOM Part 10 files
                (recursively, recognised by their ``DICM`` magic) are uploaded.

        Raises:
            httpx.HTTPStatusError: If Orthanc rejects a file.
        """
        ids: list[str] = []
        with self.client() as client:
            for path in _iter_files(paths):
                response = client.post(
                    "/instances",
                    content=path.read_bytes(),
                    headers={"Content-Type": "application/dicom"},
                )
                response.raise_for_status()
                ids.append(str(response.json()["ID"]))
        return ids

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of Orthanc's log (empty if there is none)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except (OSError, RuntimeError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __repr__(self) -> str:
        state = f"port={self._port} pid={self.pid}" if self.running else "stopped"
        return f"<OrthancServer {state}>"


@atexit.register
def require_dicomweb_orthanc() -> None:
    """Skip the calling test (fail on CI) unless Orthanc and its DICOMweb plugin are installed."""
    from tests.support.system import require

    require(find_orthanc(), "Orthanc (Debian package orthanc)")
    require(find_dicomweb_plugin(), "the Orthanc DICOMweb plugin (orthanc-dicomweb)")


@contextlib.contextmanager
def private_orthanc(
    paths: Iterable[str | os.PathLike[str]], workdir: Path | None = None
) -> Iterator[OrthancServer]:
    """Start an Orthanc of the caller's own holding the DICOM files below ``paths``.

    For modules that list or count everything on the server, where the session's shared
    server (which other modules fill) would not do.

    Parameters
    ----------
    paths: Iterable[str | os.PathLike[str]]
        Files or folders to upload
    workdir: pathlib.Path | None
        Where Orthanc keeps its database and storage (a temporary folder when None)
    """
    require_dicomweb_orthanc()
    with OrthancServer(workdir=workdir) as orthanc:
        orthanc.upload(paths)
        yield orthanc


def serve_written(
    factory: pytest.TempPathFactory, name: str, write: Callable[[Path], _W]
) -> Iterator[tuple[OrthancServer, _W]]:
    """Write a module's slides and serve them from a private Orthanc (a fixture's body).

    Parameters
    ----------
    factory: pytest.TempPathFactory
        The session's temporary-folder factory
    name: str
        Stem of the two temporary folders (slides, Orthanc storage)
    write: Callable[[pathlib.Path], Any]
        Writes the slides into the folder it is given and returns a record with a ``root``

    Yields
    ------
    tuple[OrthancServer, Any]
        The server and what ``write`` returned
    """
    written = write(factory.mktemp(f"{name}-web"))
    with private_orthanc([written.root], factory.mktemp(f"orthanc-{name}")) as orthanc:
        yield orthanc, written


def _stop_all_servers() -> None:
    with _live_lock:
        servers = list(_live_servers)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(timeout=5.0)


def main(argv: list[str] | None = None) -> int:
    """Start a server, upload ``--folder`` contents, print the URL and serve until stopped."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.orthanc",
        description="Serve DICOM files with a private Orthanc + DICOMweb on 127.0.0.1.",
    )
    parser.add_argument(
        "--folder",
        action="append",
        default=[],
        type=Path,
        help="folder (or file) to upload; may be repeated",
    )
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default: free one)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="keep config/storage here (default: temp)"
    )
    args = parser.parse_args(argv)

    # SIGTERM should unwind through the with-block like Ctrl-C does.
    def _on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _on_sigterm)
    with OrthancServer(port=args.port, workdir=args.workdir) as server:
        started = time.perf_counter()
        ids = server.upload(args.folder)
        elapsed = time.perf_counter() - started
        version = server.system().get("Version", "?")
        print(f"Orthanc {version} pid {server.pid}, log {server.log_path}", file=sys.stderr)
        print(f"uploaded {len(ids)} instances in {elapsed:.2f} s", file=sys.stderr)
        print(server.dicomweb_url, flush=True)
        try:
            while server.running:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        if not server.running:
            print(f"Orthanc exited unexpectedly:\n{server.log_tail()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
