"""Files of a shared Google Drive folder (the VisualAtom releases), fetched by gdown.

Offline: gdown's folder listing and file download are replaced by fakes that serve local bytes.
"""

from __future__ import annotations

import hashlib
import os
import sys
from types import SimpleNamespace

import pytest

from onepfrac import weights
from onepfrac.weights import DownloadError

gdown = pytest.importorskip("gdown")

NAME = "visualatom-1k-vit-tiny"
RELEASE = weights.RELEASES[NAME]
PAYLOAD = b"PK\x03\x04 a checkpoint " + os.urandom(5000)


class FakeDrive:
    """gdown.download_folder(skip_download=True) lists `files` (name -> bytes); gdown.download
    writes the one asked for by id."""

    def __init__(self, monkeypatch, files=None):
        self.files = files if files is not None else {RELEASE.filename: PAYLOAD, "README.txt": b"hi"}
        self.calls = []
        monkeypatch.setattr(gdown, "download_folder", self.download_folder)
        monkeypatch.setattr(gdown, "download", self.download)

    def download_folder(self, url=None, skip_download=False, quiet=False, **kwargs):
        self.calls.append(("list", url, skip_download))
        return [SimpleNamespace(id=f"id-{name}", path=f"VisualAtom/{name}", local_path=name) for name in self.files]

    def download(self, id=None, output=None, quiet=False, resume=False, **kwargs):
        self.calls.append(("download", id, resume))
        name = id[len("id-"):]
        with open(output, "wb") as stream:
            stream.write(self.files[name])
        return output


def test_a_folder_release_downloads_through_gdown_into_the_cache(tmp_path, monkeypatch):
    drive = FakeDrive(monkeypatch)
    path = weights.download(NAME, tmp_path, progress=False)
    assert path == tmp_path / RELEASE.filename and path.read_bytes() == PAYLOAD
    assert drive.calls == [("list", weights.VISUALATOM_FOLDER, True),
                           ("download", f"id-{RELEASE.filename}", True)]
    assert sorted(os.listdir(tmp_path)) == sorted([RELEASE.filename, f".{RELEASE.filename}.lock"])
    # cached: nothing is asked of Drive again, and --ckpt NAME resolves to the file
    assert weights.resolve(NAME, tmp_path, progress=False) == path and len(drive.calls) == 2


def test_without_gdown_one_line_names_the_extra_and_the_manual_way(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gdown", None)  # import gdown raises ImportError
    monkeypatch.setenv("ONEPFRAC_CACHE", str(tmp_path))
    assert weights.main(["download", NAME, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'a file of a Google Drive folder, needs gdown: pip install "onepfrac[drive]"' in err
    assert f"by hand from {weights.VISUALATOM_FOLDER} and place it at {tmp_path / RELEASE.filename}" in err


def test_a_folder_without_the_file_lists_what_it_holds(tmp_path, monkeypatch):
    FakeDrive(monkeypatch, {"other.pth": b"x"})
    with pytest.raises(DownloadError, match=f"holds no {RELEASE.filename} .it holds other.pth."):
        weights.download(NAME, tmp_path, progress=False)
    assert not (tmp_path / RELEASE.filename).exists()


def test_gdown_failures_are_one_line_download_errors(tmp_path, monkeypatch):
    drive = FakeDrive(monkeypatch)

    def refused(**kwargs):
        raise gdown.exceptions.FileURLRetrievalError("Too many users have viewed or downloaded\nthis file")

    monkeypatch.setattr(gdown, "download", refused)
    with pytest.raises(DownloadError, match="gdown could not download .*Too many users have viewed or "
                                            "downloaded this file.*run the same command again") as caught:
        weights.download(NAME, tmp_path, progress=False)
    assert "\n" not in str(caught.value)
    monkeypatch.setattr(gdown, "download_folder", refused)
    with pytest.raises(DownloadError, match="gdown could not list the Google Drive folder"):
        weights.download(NAME, tmp_path, progress=False)
    assert drive.calls == [("list", weights.VISUALATOM_FOLDER, True)]


def test_a_web_page_or_a_wrong_checksum_is_refused_and_removed(tmp_path, monkeypatch):
    FakeDrive(monkeypatch, {RELEASE.filename: b"<!DOCTYPE html><title>Google Drive - quota</title>"})
    with pytest.raises(DownloadError, match="sent a web page instead"):
        weights.download(NAME, tmp_path, progress=False)
    assert not [name for name in os.listdir(tmp_path) if not name.endswith(".lock")]
    FakeDrive(monkeypatch)
    monkeypatch.setitem(weights.RELEASES, NAME, weights.Release(**{**RELEASE.__dict__, "sha256": "0" * 64}))
    with pytest.raises(DownloadError, match="does not match the published"):
        weights.download(NAME, tmp_path, progress=False)
    assert not [name for name in os.listdir(tmp_path) if not name.endswith(".lock")]
    right = hashlib.sha256(PAYLOAD).hexdigest()
    monkeypatch.setitem(weights.RELEASES, NAME, weights.Release(**{**RELEASE.__dict__, "sha256": right,
                                                                   "size": len(PAYLOAD)}))
    assert weights.download(NAME, tmp_path, progress=False).read_bytes() == PAYLOAD
