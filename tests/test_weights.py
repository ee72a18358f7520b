"""Released-checkpoint registry and downloads, against a local HTTP server that imitates Google Drive.

Nothing here touches the network: every transfer goes to 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from onepfrac import weights
from onepfrac.weights import DownloadError, fetch, resolve

PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()
TOKEN, UUID = "AbC-12_x", "5e1f0a6c-uuid"


class FakeDrive(ThreadingHTTPServer):
    """/uc?export=download&id=ID answers with Drive's virus-scan page: the newer download form
    (mode 'form') or the older confirm link + download_warning cookie (mode 'token');
    /file.bin serves the file directly. Range requests are honoured unless `ignore_range`."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), DriveHandler)
        self.mode = "form"
        self.payload = PAYLOAD
        self.cut_next = []  # per file response: bytes to send before dropping the connection
        self.ignore_range = False
        self.quota_page = False
        self.log: list[tuple[str, str | None]] = []  # (path with query, Range header)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    @property
    def file_requests(self):
        return [entry for entry in self.log if not entry[0].startswith("/uc?export=download&id=")]


class DriveHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        server: FakeDrive = self.server
        server.log.append((self.path, self.headers.get("Range")))
        parsed = urllib.parse.urlparse(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        if parsed.path == "/file.bin":
            return self.send_file()
        if parsed.path == "/download" and query.get("confirm") == "t" and query.get("uuid") == UUID:
            return self.send_file()
        if parsed.path == "/uc":
            cookie = self.headers.get("Cookie", "")
            if query.get("confirm") == TOKEN and f"download_warning_0={TOKEN}" in cookie:
                return self.send_file()
            return self.send_page(query.get("id", ""))
        self.send_error(404)

    def send_page(self, file_id):
        server: FakeDrive = self.server
        if server.quota_page:
            body = "<html><head><title>Google Drive - Quota exceeded</title></head><body>Too many users</body></html>"
            cookie = None
        elif server.mode == "form":
            body = (f'<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>'
                    f'<form id="download-form" action="{server.url("/download")}" method="get">'
                    f'<input type="submit" id="uc-download-link" value="Download anyway"/>'
                    f'<input type="hidden" name="id" value="{file_id}"><input type="hidden" name="export" '
                    f'value="download"><input type="hidden" name="confirm" value="t">'
                    f'<input type="hidden" name="uuid" value="{UUID}"></form></body></html>')
            cookie = None
        else:
            body = (f'<html><head><title>Google Drive - Virus scan warning</title></head><body>'
                    f'<a id="uc-download-link" href="/uc?export=download&amp;confirm={TOKEN}&amp;id={file_id}">'
                    f'Download anyway</a></body></html>')
            cookie = f"download_warning_0={TOKEN}; Path=/"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if cookie:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        self.wfile.write(data)

    def send_file(self):
        server: FakeDrive = self.server
        payload, start = server.payload, 0
        match = (self.headers.get("Range") or "").removeprefix("bytes=").rstrip("-")
        if match.isdigit() and not server.ignore_range:
            start = int(match)
            if start >= len(payload):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(payload)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        else:
            self.send_response(200)
        body = payload[start:]
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_next:
            # a dropped connection: part of the body, then the socket closes (HTTP/1.0 closes after each reply)
            self.wfile.write(body[:server.cut_next.pop(0)])
            self.wfile.flush()
            return
        self.wfile.write(body)


@pytest.fixture()
def drive():
    server = FakeDrive()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def leftovers(directory: Path) -> list[str]:
    """Files left in `directory`, lock files (empty, kept on purpose) aside."""
    return sorted(p.name for p in directory.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


# ---------------------------------------------------------------- Google Drive confirmation

def test_drive_sharing_links_become_download_urls():
    view = "https://drive.google.com/file/d/1D9uQbvhI6DWRrataQCezcULXxRidb-0V/view?usp=sharing"
    assert weights.drive_file_id(view) == "1D9uQbvhI6DWRrataQCezcULXxRidb-0V"
    assert weights.direct_url(view) == "https://drive.google.com/uc?export=download&id=1D9uQbvhI6DWRrataQCezcULXxRidb-0V"
    assert weights.drive_file_id("https://drive.google.com/open?id=XYZ") == "XYZ"
    assert weights.drive_file_id("https://example.org/file/d/XYZ/view") is None
    assert weights.direct_url("https://example.org/w.pth") == "https://example.org/w.pth"


@pytest.mark.parametrize("mode", ["form", "token"])
def test_drive_confirmation_page_is_followed_to_the_file(drive, tmp_path, mode):
    drive.mode = mode
    dest = fetch(drive.url("/uc?export=download&id=FILE1"), tmp_path / "w.pth", len(PAYLOAD), SHA,
                 progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["w.pth"]
    assert len(drive.log) == 2  # the warning page, then the confirmed download
    if mode == "form":
        assert drive.log[1][0] == f"/download?id=FILE1&export=download&confirm=t&uuid={UUID}"
    else:
        assert f"confirm={TOKEN}" in drive.log[1][0]


def test_a_web_page_without_confirmation_is_an_error_and_leaves_no_file(drive, tmp_path):
    drive.quota_page = True
    with pytest.raises(DownloadError, match=r"web page \('Google Drive - Quota exceeded'\).*place it at"):
        fetch(drive.url("/uc?export=download&id=FILE1"), tmp_path / "w.pth", progress=False)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- interruption and resume

def test_an_interrupted_transfer_keeps_a_part_file_and_the_next_call_resumes_with_range(drive, tmp_path):
    drive.cut_next = [120_000]
    dest = tmp_path / "w.pth"
    url = drive.url("/uc?export=download&id=FILE1")
    with pytest.raises(DownloadError, match="interrupted after 120,000 bytes.*run the same command again"):
        fetch(url, dest, len(PAYLOAD), SHA, progress=False, retries=0)
    assert not dest.exists()
    assert (tmp_path / "w.pth.part").stat().st_size == 120_000

    fetch(url, dest, len(PAYLOAD), SHA, progress=False, retries=0)
    assert dest.read_bytes() == PAYLOAD
    assert drive.file_requests[-1][1] == "bytes=120000-"
    assert leftovers(tmp_path) == ["w.pth"]


def test_interruptions_are_resumed_within_one_call(drive, tmp_path):
    drive.cut_next = [50_000, 100_000]
    dest = fetch(drive.url("/file.bin"), tmp_path / "w.pth", len(PAYLOAD), SHA, progress=False, retries=3)
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in drive.file_requests] == [None, "bytes=50000-", "bytes=150000-"]


def test_a_server_ignoring_range_restarts_the_file_from_the_start(drive, tmp_path):
    drive.cut_next, drive.ignore_range = [70_000], True
    dest = fetch(drive.url("/file.bin"), tmp_path / "w.pth", len(PAYLOAD), SHA, progress=False, retries=1)
    assert dest.read_bytes() == PAYLOAD


def test_a_complete_part_file_is_verified_and_renamed(drive, tmp_path):
    (tmp_path / "w.pth.part").write_bytes(PAYLOAD)
    dest = fetch(drive.url("/file.bin"), tmp_path / "w.pth", len(PAYLOAD), SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD and drive.log == []


def test_a_part_file_of_unknown_size_that_is_complete_is_finished_by_the_416_reply(drive, tmp_path):
    (tmp_path / "w.pth.part").write_bytes(PAYLOAD)
    dest = fetch(drive.url("/file.bin"), tmp_path / "w.pth", progress=False)
    assert dest.read_bytes() == PAYLOAD and drive.log == [("/file.bin", f"bytes={len(PAYLOAD)}-")]


def test_concurrent_downloads_of_one_file_fetch_it_once(drive, tmp_path):
    results, errors = [], []

    def worker():
        try:
            results.append(fetch(drive.url("/file.bin"), tmp_path / "w.pth", len(PAYLOAD), SHA, progress=False))
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and len(results) == 4
    assert (tmp_path / "w.pth").read_bytes() == PAYLOAD
    assert len(drive.file_requests) == 1


# ---------------------------------------------------------------- verification

def test_a_checksum_mismatch_raises_and_leaves_no_file_at_all(drive, tmp_path):
    drive.payload = PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 0xFF])  # one corrupt byte
    with pytest.raises(DownloadError, match="sha256 .* does not match the published"):
        fetch(drive.url("/uc?export=download&id=FILE1"), tmp_path / "w.pth", len(PAYLOAD), SHA, progress=False)
    assert leftovers(tmp_path) == []


def test_a_server_offering_another_size_is_refused_before_writing(drive, tmp_path):
    drive.payload = PAYLOAD + b"extra"
    with pytest.raises(DownloadError, match="offers 300,005 bytes, expected 300,000"):
        fetch(drive.url("/file.bin"), tmp_path / "w.pth", len(PAYLOAD), SHA, progress=False)
    assert leftovers(tmp_path) == []


def test_a_verified_file_is_not_downloaded_again_and_a_wrong_one_is_reported(drive, tmp_path):
    dest = tmp_path / "w.pth"
    dest.write_bytes(PAYLOAD)
    assert fetch(drive.url("/file.bin"), dest, len(PAYLOAD), SHA, progress=False) == dest
    assert drive.log == []
    dest.write_bytes(b"x" * len(PAYLOAD))
    with pytest.raises(DownloadError, match="does not match"):
        fetch(drive.url("/file.bin"), dest, len(PAYLOAD), SHA, progress=False)
    assert dest.read_bytes() == b"x" * len(PAYLOAD)  # a user's file is never deleted


def test_without_network_the_error_says_so_and_where_to_place_the_file(tmp_path):
    import socket
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match=rf"cannot reach 127.0.0.1:{port}.*no network\?.*place the file at "
                                            rf".*w\.pth"):
        fetch(f"http://127.0.0.1:{port}/w.pth", tmp_path / "w.pth", progress=False)
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- registry, resolve and command line

def test_registry_holds_the_four_released_1pfrac_vit_tiny_weights():
    ids = {"0.01": "1XdxaD70tVhdWqwXGmpp7S4vro_06cWhT", "0.05": "1zPIVGLDKic80agypEPEAnVYQ0hyLwHEw",
           "0.1": "1D9uQbvhI6DWRrataQCezcULXxRidb-0V", "0.2": "1MWahtdLKtTmrtV_bi65FefktXsZlzBM2"}
    for delta, drive_id in ids.items():
        release = weights.RELEASES[f"1p-frac-vit-tiny-delta{delta}"]
        assert release.model == "vit_tiny_patch16_224" and release.delta == float(delta)
        assert weights.drive_file_id(release.url) == drive_id


def test_cache_directory_comes_from_the_option_then_the_environment_then_home(monkeypatch, tmp_path):
    monkeypatch.delenv("ONEPFRAC_CACHE", raising=False)
    assert weights.cache_dir() == Path("~/.cache/onepfrac").expanduser()
    monkeypatch.setenv("ONEPFRAC_CACHE", str(tmp_path / "env"))
    assert weights.cache_dir() == tmp_path / "env"
    assert weights.cache_dir(tmp_path / "option") == tmp_path / "option"


def test_resolve_takes_a_path_a_url_or_a_known_name(drive, tmp_path, monkeypatch):
    local = tmp_path / "mine.pth"
    local.write_bytes(b"weights")
    assert resolve(local) == local and resolve(str(local)) == local

    from_url = resolve(drive.url("/file.bin"), cache_dir=tmp_path / "cache", progress=False)
    assert from_url.read_bytes() == PAYLOAD and from_url.is_relative_to(tmp_path / "cache")
    assert resolve(drive.url("/file.bin"), cache_dir=tmp_path / "cache") == from_url  # cached

    release = weights.RELEASES["1p-frac-vit-tiny-delta0.1"]
    monkeypatch.setitem(weights.RELEASES, release.name, weights.Release(
        **{**release.__dict__, "url": drive.url("/uc?export=download&id=X"), "size": len(PAYLOAD), "sha256": SHA}))
    by_name = resolve(release.name, cache_dir=tmp_path / "cache", progress=False)
    assert by_name == tmp_path / "cache" / release.filename and by_name.read_bytes() == PAYLOAD


def test_resolve_refuses_an_unknown_name_and_suggests_close_ones(tmp_path):
    with pytest.raises(DownloadError, match="not a known checkpoint name. Did you mean 1p-frac-vit-tiny-delta0.1"):
        resolve("1p-frac-vit-tiny-delta0.10", cache_dir=tmp_path)


def test_a_release_without_a_direct_link_says_where_to_put_the_file(tmp_path):
    release = weights.RELEASES["2d-ofdb-1k-vit-tiny"]  # no link, no folder: by hand only
    with pytest.raises(DownloadError, match=f"by hand from .*OFDB.* and place it at {tmp_path}/{release.filename}"):
        weights.download(release.name, tmp_path)
    (tmp_path / release.filename).write_bytes(b"placed by hand")
    assert weights.download(release.name, tmp_path) == tmp_path / release.filename


def test_cli_list_shows_every_release_with_its_source(capsys):
    assert weights.main(["list"]) == 0
    out = capsys.readouterr().out
    for release in weights.RELEASES.values():
        assert release.name in out and (release.url or release.page) in out
    assert "unknown" in out and "ONEPFRAC_CACHE" in out


def test_cli_download_prints_the_cached_path(drive, tmp_path, monkeypatch, capsys):
    release = weights.RELEASES["1p-frac-vit-tiny-delta0.05"]
    monkeypatch.setitem(weights.RELEASES, release.name, weights.Release(
        **{**release.__dict__, "url": drive.url("/uc?export=download&id=X")}))
    monkeypatch.setenv("ONEPFRAC_CACHE", str(tmp_path))
    assert weights.main(["download", release.name, "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / release.filename)
    assert SHA in err  # no published checksum: the one measured is shown for the record


def test_cli_errors_exit_non_zero_with_one_line(capsys, tmp_path):
    assert weights.main(["download", "no-such-weights", "--cache-dir", str(tmp_path)]) == 2  # bad input
    assert capsys.readouterr().err.startswith("error: download 'no-such-weights' is not a known checkpoint")
    assert weights.main(["where", "1p-frac-vit-tiny-delta0.2", "--cache-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().startswith(str(tmp_path))
