"""Security properties not covered by ``test_web_faults.py``.

* TLS certificates and host names are verified by default; only ``verify=False`` turns that off.
* Credentials (headers, ``auth``, credential query parameters) never leave the configured
  origin, also when a redirect changes only the port or the scheme.
* The local client never opens a file outside its folder, whatever links or URIs point at.
* Tokens never appear in ``repr()`` of clients, in log records (of any logger, at any level)
  or in error messages.
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import dicomslide
import dicomslide_sync
from dicomslide.errors import DicomSlideError, NotFoundError
from dicomslide.synthetic import write_slide
from tests.support.slides import slide_spec

BASE = "https://dicomweb.test/dicom-web"
TOKEN = "tok-SECRET-4711"
PASSWORD = "pw-SECRET-0815"
API_KEY = "key-SECRET-2342"
SECRETS = (TOKEN, PASSWORD, API_KEY, base64.b64encode(f"alice:{PASSWORD}".encode()).decode())


def _ca_bundle() -> str | None:
    bundle = ssl.get_default_verify_paths().cafile
    return bundle if bundle is not None and os.path.exists(bundle) else None


def _dcm_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def _real(paths: list[str]) -> set[str]:
    return {os.path.realpath(p) for p in paths}


def _link_outside(folder: Path, outside: Path) -> None:
    """Links in ``folder`` to every file of ``outside``, to /etc/passwd, and one via ``..``."""
    for path in _dcm_files(outside):
        (folder / path.name).symlink_to(path)
    (folder / "passwd").symlink_to("/etc/passwd")
    (folder / "sub").mkdir()
    (folder / "sub" / "up.dcm").symlink_to(os.path.relpath(_dcm_files(outside)[0], folder / "sub"))


def _copy_with_inner_links(folder: Path, outside: Path) -> int:
    (folder / "real").mkdir(parents=True)
    for path in _dcm_files(outside):
        (folder / "real" / path.name).write_bytes(path.read_bytes())
        (folder / ("link-" + path.name)).symlink_to(Path("real") / path.name)
    return len(_dcm_files(outside))


def _ssl_context(client: dicomslide.DICOMwebClient) -> ssl.SSLContext:
    http = client._transport.client()
    transport: Any = http._transport
    context = transport._pool._ssl_context
    assert isinstance(context, ssl.SSLContext)
    return context


# --- TLS --------------------------------------------------------------------------------------


async def test_tls_is_verified_by_default() -> None:
    async with dicomslide.DICOMwebClient(BASE) as client:
        context = _ssl_context(client)
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname


async def test_tls_verification_is_off_only_when_asked() -> None:
    async with dicomslide.DICOMwebClient(BASE, verify=False) as client:
        context = _ssl_context(client)
        assert context.verify_mode == ssl.CERT_NONE
        assert not context.check_hostname
    # A CA bundle keeps verification on.
    bundle = _ca_bundle()
    if bundle is None:
        pytest.skip("no CA bundle file on this system")
    async with dicomslide.DICOMwebClient(BASE, verify=bundle) as client:
        assert _ssl_context(client).verify_mode == ssl.CERT_REQUIRED


# --- credentials and redirects ----------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "https://dicomweb.test:8443/dicom-web/elsewhere",  # other port
        "http://dicomweb.test/dicom-web/elsewhere",  # downgrade to plain HTTP
        "https://evil.test/dicom-web/elsewhere",  # other host
    ],
)
async def test_redirect_leaving_the_origin_drops_every_credential(target: str) -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "dicomweb.test" and "elsewhere" not in request.url.path:
            return httpx.Response(302, headers={"location": target})
        return httpx.Response(200, json=[])

    async with dicomslide.DICOMwebClient(
        f"{BASE}?access_token={TOKEN}",
        headers={"X-Api-Key": API_KEY, "Cookie": f"session={TOKEN}"},
        auth=("alice", PASSWORD),
        transport=httpx.MockTransport(handle),
    ) as client:
        assert await client.search_for_series() == []
    first, second = seen
    assert TOKEN in str(first.url)
    assert first.headers["x-api-key"] == API_KEY
    assert "authorization" in first.headers
    assert str(second.url).startswith(target)
    text = str(second.url) + repr(dict(second.headers))
    for secret in SECRETS:
        assert secret not in text


# --- tokens in repr, logs and errors ----------------------------------------------------------


def _leaky_server(request: httpx.Request) -> httpx.Response:
    # Echoes whatever it got, as some servers do in error bodies.
    if request.url.path.endswith("/series"):
        return httpx.Response(200, json=[])
    return httpx.Response(
        403, text=f"denied {request.url} {request.headers.get('authorization')} {API_KEY}"
    )


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of every logger (httpx, httpcore, asyncio, dicomslide) at DEBUG."""
    with caplog.at_level(logging.DEBUG):
        for name in ("httpx", "httpcore", "dicomslide", "asyncio", ""):
            caplog.set_level(logging.DEBUG, logger=name)
        yield caplog


async def test_tokens_are_not_in_repr_logs_or_errors(
    all_logs: pytest.LogCaptureFixture,
) -> None:
    url = f"{BASE}?access_token={TOKEN}&project=p1"
    kwargs: dict[str, Any] = {
        "headers": {"X-Api-Key": API_KEY},
        "auth": ("alice", PASSWORD),
        "transport": httpx.MockTransport(_leaky_server),
        "retry": dicomslide.RetryPolicy(attempts=1),
    }
    async with dicomslide.DICOMwebClient(url, **kwargs) as client:
        await client.search_for_series()
        with pytest.raises(DicomSlideError) as info:
            await client.retrieve_series_metadata("1.2.3", "4.5.6")
        texts = [repr(client), str(client), str(info.value), repr(info.value)]
        texts.append(getattr(info.value, "url", ""))
    sync_client = dicomslide_sync.DICOMwebClient(url, **kwargs)
    texts += [repr(sync_client), str(sync_client)]
    sync_client.close()
    records = all_logs.records
    assert any("dicomweb.test" in r.getMessage() for r in records), "nothing was logged"
    texts += [r.getMessage() for r in records]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, text
    # The non-credential parameter is kept, so logs stay useful.
    assert any("project=p1" in r.getMessage() for r in records)


# --- the local client stays in its folder ------------------------------------------------------


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a valid slide that no client below may read."""
    folder = tmp_path_factory.mktemp("outside")
    write_slide(folder, slide_spec((64, 64), 32, 1, seed=77))
    return folder


_opened: list[str] = []
_watching: list[bool] = [False]


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _watching[0] and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # cannot be removed; records only while a test watches


class Watch:
    """Paths opened by this process between :meth:`start` and the end of the test."""

    files = _opened

    def start(self) -> None:
        _opened.clear()
        _watching[0] = True


@pytest.fixture
def opened() -> Iterator[Watch]:
    try:
        yield Watch()
    finally:
        _watching[0] = False


async def test_symlinks_to_files_outside_the_folder_are_not_followed(
    tmp_path: Path, outside: Path, opened: Watch
) -> None:
    folder = tmp_path / "slide"
    folder.mkdir()
    _link_outside(folder, outside)
    opened.start()
    async with dicomslide.DICOMfileClient(folder, index_dir=tmp_path / "index") as client:
        summary = await client.index_summary()
        assert summary.instances == 0
        assert await dicomslide.find_slides(client) == []
    real = _real(opened.files)
    assert not [p for p in real if p.startswith(_real([str(outside)]).pop() + os.sep)]
    assert "/etc/passwd" not in real


async def test_symlinks_inside_the_folder_still_work(tmp_path: Path, outside: Path) -> None:
    folder = tmp_path / "slide"
    count = _copy_with_inner_links(folder, outside)
    async with dicomslide.DICOMfileClient(folder, index_dir=tmp_path / "index") as client:
        summary = await client.index_summary()
        # Each instance is there twice (file and link): one is kept, one is a duplicate.
        assert summary.instances == count
        slide = (await dicomslide.find_slides(client))[0]
        assert (await slide.get_image_region((0, 0), 0, (64, 64))).shape == (64, 64, 3)


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/passwd",
        "/etc/passwd",
        "../outside.txt",
        "sub/../../outside.txt",
        "file://localhost/etc/passwd",
        "file://evil.test/etc/passwd",
        "link-out.txt",
        "https://dicomweb.test/bulk/1",
    ],
)
async def test_bulk_data_outside_the_folder_is_never_read(
    tmp_path: Path, uri: str, opened: Watch
) -> None:
    folder = tmp_path / "slide"
    (folder / "sub").mkdir(parents=True)
    (tmp_path / "outside.txt").write_text("secret")
    (folder / "link-out.txt").symlink_to(tmp_path / "outside.txt")
    opened.start()
    async with dicomslide.DICOMfileClient(folder, index_dir=tmp_path / "index") as client:
        with pytest.raises(DicomSlideError) as info:
            await client.retrieve_bulkdata(uri)
    assert isinstance(info.value, NotFoundError | dicomslide.UnsupportedError)
    real = _real(opened.files)
    assert "/etc/passwd" not in real
    assert str(tmp_path / "outside.txt") not in real
