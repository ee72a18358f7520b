"""Released checkpoints: a registry, resumable verified downloads (Google Drive included), `--ckpt` resolution.

    python -m onepfrac.weights list
    python -m onepfrac.weights download NAME_OR_URL [--cache-dir DIR]   # prints the file's path
    python -m onepfrac.weights where NAME                                # where to put a file by hand
    python -m onepfrac.weights verify NAME [--file PATH]                 # check a file's size and sha256
    python -m onepfrac.weights export CKPT OUT_DIR                       # a Hub model folder for timm

Files go to the cache directory: --cache-dir, else $ONEPFRAC_CACHE, else ~/.cache/onepfrac.
A download is written to `<file>.part`, resumed with an HTTP Range request after an
interruption, checked (size, and sha256 where published) and only then renamed into place,
so a file at the final path is always complete. Only the standard library does the HTTP of
direct links; a file of a shared Google Drive folder (the VisualAtom releases) is listed and
fetched by gdown, the optional `drive` extra (`pip install "onepfrac[drive]"`).
"""

from __future__ import annotations

import difflib
import errno
import hashlib
import html
import http.client
import http.cookiejar
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import filelock

from onepfrac import extras
from onepfrac.argparsing import Parser
from onepfrac.errors import UsageError, UserError
from onepfrac.paths import check_writable_folder

CACHE_ENV = "ONEPFRAC_CACHE"
DEFAULT_CACHE = Path("~/.cache/onepfrac")
CHUNK = 1 << 20
TIMEOUT = 30.0  # seconds without data before a connection counts as dropped
MAX_PAGE = 1 << 20  # an HTML confirmation page is small; never buffer more
USER_AGENT = "onepfrac-weights (python urllib)"


class DownloadError(UserError, RuntimeError):
    """A checkpoint that could not be fetched or verified; the message says what to do instead.

    `python -m onepfrac.weights` exits 1 with it (the download could not be done); the trainer
    and the probe, to which it is a bad --ckpt, exit 2 (see `resolve_option`)."""

    exit_code = 1


@dataclass(frozen=True)
class Release:
    name: str
    model: str  # timm model name the weights load into
    dataset: str
    delta: float | None  # 1p-frac perturbation size
    filename: str  # name in the cache directory
    url: str | None  # a direct file link; None when only a folder or nothing is published
    page: str  # where the link (or the file name) is published
    size: int | None = None  # bytes; None: not published
    sha256: str | None = None  # None: not published
    note: str = ""
    folder: str | None = None  # a shared Google Drive folder holding `filename` (fetched by gdown)


ONEPFRAC_README = "https://github.com/SUPER-TADORY/1p-frac"
VISUALATOM_FOLDER = "https://drive.google.com/drive/folders/1OUSmOt01K-nDsr55-w1YweGDfsVtgz4N"
OFDB_README = "https://github.com/ryoo-nakamura/OFDB#pre-trained-models"


def _onepfrac(delta: str, drive_id: str, cifar100: float) -> Release:
    return Release(
        name=f"1p-frac-vit-tiny-delta{delta}", model="vit_tiny_patch16_224",
        dataset="1p-frac (sigma 3.5, L 1k)", delta=float(delta),
        filename=f"1p-frac_vit_tiny_patch16_224_sigma3.5_delta{delta}_L1k.pth",
        url=f"https://drive.google.com/file/d/{drive_id}/view?usp=sharing", page=ONEPFRAC_README,
        note=f"CIFAR-100 fine-tuning top-1 {cifar100} (upstream README)")


def _folder_only(name, model, dataset, filename, page, note, folder=None) -> Release:
    return Release(name=name, model=model, dataset=dataset, delta=None, filename=filename, url=None,
                   page=page, note=note, folder=folder)


# Sizes and checksums are not published for any of these: None until someone records them.
RELEASES: dict[str, Release] = {r.name: r for r in [
    # upstream README of "Scaling Backwards" (seeds/000): the four ViT-Tiny weights of its table
    _onepfrac("0.01", "1XdxaD70tVhdWqwXGmpp7S4vro_06cWhT", 19.9),
    _onepfrac("0.05", "1zPIVGLDKic80agypEPEAnVYQ0hyLwHEw", 83.0),
    _onepfrac("0.1", "1D9uQbvhI6DWRrataQCezcULXxRidb-0V", 84.2),
    _onepfrac("0.2", "1MWahtdLKtTmrtV_bi65FefktXsZlzBM2", 83.4),
    # VisualAtom (CVPR 2023) README: files of one shared Drive folder, no per-file links
    _folder_only("visualatom-1k-vit-tiny", "deit_tiny_patch16_224", "VisualAtom-1k",
                 "vit_tiny_with_visualatom_1k.pth.tar", VISUALATOM_FOLDER, "file in a Drive folder (gdown)",
                 folder=VISUALATOM_FOLDER),
    _folder_only("visualatom-21k-vit-base", "deit_base_patch16_224", "VisualAtom-21k",
                 "vit_base_with_visualatom_21k.pth.tar", VISUALATOM_FOLDER, "file in a Drive folder (gdown)",
                 folder=VISUALATOM_FOLDER),
    _folder_only("visualatom-21k-swin-base", "swin_base_patch4_window7_224", "VisualAtom-21k",
                 "swin_base_with_visualatom_21k.pth.tar", VISUALATOM_FOLDER, "file in a Drive folder (gdown)",
                 folder=VISUALATOM_FOLDER),
    # OFDB (ICCV 2023) README: names the files, publishes no link ("available in this Link")
    _folder_only("2d-ofdb-1k-vit-tiny", "deit_tiny_patch16_224", "2D-OFDB-1k",
                 "pretrain_deit_tiny_2d-ofdb1k_patch_lr1.0e-3_epochs80000_bs256-last.pth",
                 OFDB_README, "no public link yet"),
    _folder_only("3d-ofdb-1k-vit-tiny", "deit_tiny_patch16_224", "3D-OFDB-1k",
                 "pretrain_deit_tiny_3d-ofdb1k_patch_lr1.0e-3_epochs80000_bs256-last.pth",
                 OFDB_README, "no public link yet"),
    _folder_only("2d-ofdb-21k-vit-tiny", "deit_tiny_patch16_224", "2D-OFDB-21k",
                 "pretrain_deit_tiny_2d-ofdb21k_patch_lr5.0e-4_epochs15238_bs1024_amp-last.pth.tar",
                 OFDB_README, "no public link yet"),
    _folder_only("3d-ofdb-21k-vit-tiny", "deit_tiny_patch16_224", "3D-OFDB-21k",
                 "pretrain_deit_tiny_3d-ofdb21k_edgar_lr5.0e-4_epochs15238_bs1024_amp-last.pth.tar",
                 OFDB_README, "no public link yet"),
]}


# ---------------------------------------------------------------- locations

def cache_dir(directory=None) -> Path:
    """--cache-dir, else $ONEPFRAC_CACHE, else ~/.cache/onepfrac."""
    return Path(directory or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def release_path(name: str, directory=None) -> Path:
    """Where the release `name` lives in the cache (put a hand-downloaded file here)."""
    return cache_dir(directory) / _release(name).filename


def url_path(url: str, directory=None) -> Path:
    """Cache path of an arbitrary URL: its file name behind a short hash of the URL (no collisions)."""
    drive_id = drive_file_id(url)
    base = f"drive-{drive_id}" if drive_id else Path(urllib.parse.urlparse(url).path).name or "download"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)
    return cache_dir(directory) / "urls" / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{base}"


class UnknownCheckpoint(DownloadError):
    """A name in no registry entry, or a folder given as a checkpoint: bad input (exit 2), nothing was tried."""

    exit_code = 2


def _release(name: str, command: str = "") -> Release:
    if name not in RELEASES:
        close = difflib.get_close_matches(name, RELEASES, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownCheckpoint(f"{command + ' ' if command else ''}{name!r} is not a known checkpoint{hint} "
                                "(`python -m onepfrac.weights list` shows them)")
    return RELEASES[name]


# ---------------------------------------------------------------- public entry points

def resolve(spec, cache_dir=None, progress: bool = True, option: str = "--ckpt") -> Path:
    """The local file for the trainer's --ckpt: an existing path, an http(s) URL (downloaded into
    the cache) or a known release name (downloaded unless already cached). `option` is what the
    user typed the spec as, named in every message."""
    text = str(spec)
    if text.startswith(("http://", "https://")):
        return fetch(text, url_path(text, cache_dir), progress=progress)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_file():
            raise UnknownCheckpoint(f"{option} {text}: a folder, not a checkpoint file")
        return path
    if text in RELEASES:
        return download(text, cache_dir, progress)
    close = difflib.get_close_matches(text, RELEASES, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownCheckpoint(f"{option} {text}: no such file, not an http(s) URL and not a known checkpoint name."
                        f"{hint} `python -m onepfrac.weights list` shows the known names.")


def check_cache_dir(directory=None) -> Path:
    """The cache directory must be a folder we can write, or creatable; name where it came from."""
    where = cache_dir(directory)
    source = "--cache-dir" if directory else f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "the default cache"
    check_writable_folder(where, source)
    return where


# a disk that refuses writes: one line; the .part file stays for the rerun to resume
DISK_ERRORS = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied",
               getattr(errno, "EDQUOT", errno.ENOSPC): "disk quota exceeded"}


def resolve_option(spec, progress: bool = True) -> Path:
    """`resolve` for a command's --ckpt: there a file it cannot get is bad input (exit 2)."""
    try:
        return resolve(spec, progress=progress)
    except DownloadError as error:
        error.exit_code = UserError.exit_code
        raise


def download(name: str, cache_dir=None, progress: bool = True) -> Path:
    """The cached file of release `name`, downloaded and verified first if needed."""
    release = _release(name)
    dest = release_path(name, cache_dir)
    if release.url is None:
        if dest.exists():
            verify(dest, release.size, release.sha256)
            return dest
        if release.folder is not None:
            return fetch_from_drive_folder(release.folder, release.filename, dest, release.size,
                                           release.sha256, progress)
        raise DownloadError(f"{name}: no direct download link is published ({release.note}). Download "
                            f"{release.filename} by hand from {release.page} and place it at {dest}")
    return fetch(release.url, dest, release.size, release.sha256, progress=progress)


def fetch(url: str, dest, size: int | None = None, sha256: str | None = None, progress: bool = True,
          retries: int = 3, timeout: float = TIMEOUT) -> Path:
    """Download `url` to `dest` through `dest.part`: resumable, verified, renamed only when complete.

    A file already at `dest` is verified and kept. A dropped connection is resumed with a Range
    request up to `retries` times; past that the `.part` file stays for the next call to resume.
    A size or checksum mismatch deletes the `.part` file (resuming it would keep the corruption).
    """
    dest = Path(dest)
    if dest.exists():
        verify(dest, size, sha256)
        return dest
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # every rank of a distributed run resolves --ckpt: one downloads, the others wait and reuse it
        with _exclusive(dest.with_name(f".{dest.name}.lock")):
            if dest.exists():
                verify(dest, size, sha256)
                return dest
            return _fetch_unlocked(url, dest, size, sha256, progress, retries, timeout)
    except OSError as error:
        if isinstance(error, UserError) or error.errno not in DISK_ERRORS:
            raise
        raise DownloadError(f"{DISK_ERRORS[error.errno]} writing {error.filename or dest}: free space or choose "
                            f"another --cache-dir (or ${CACHE_ENV}), then run the same command again "
                            "to resume") from None


def fetch_from_drive_folder(folder: str, filename: str, dest, size: int | None = None,
                            sha256: str | None = None, progress: bool = True) -> Path:
    """`filename` of the shared Google Drive folder `folder`, downloaded into `dest` by gdown (which
    lists the folder and fetches the file, resuming an interrupted transfer from its `.part`),
    then checked as `fetch` checks and only then renamed to `dest`."""
    dest = Path(dest)
    by_hand = f"download {filename} by hand from {folder} and place it at {dest}"
    try:
        gdown = extras.require("gdown", "drive", f"{filename}, a file of a Google Drive folder,")
    except extras.MissingExtra as missing:
        raise extras.MissingExtra(f"{missing}; or {by_hand}") from None
    if dest.exists():
        verify(dest, size, sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest.with_name(f".{dest.name}.lock")):  # one rank downloads, the others reuse it
        if dest.exists():
            verify(dest, size, sha256)
            return dest
        try:
            listing = gdown.download_folder(url=folder, skip_download=True, quiet=not progress)
        except Exception as error:  # gdown's own errors, requests' and its ValueErrors alike
            raise DownloadError(f"gdown could not list the Google Drive folder {folder} "
                                f"({_one_line(error)}); try again later, or {by_hand}") from None
        found = [entry for entry in listing or [] if Path(entry.path).name == filename]
        if not found:
            names = ", ".join(sorted(Path(entry.path).name for entry in listing or [])) or "nothing"
            raise DownloadError(f"the Google Drive folder {folder} holds no {filename} (it holds "
                                f"{names}); {by_hand}")
        staged = dest.with_name(dest.name + ".gdown")  # gdown's finished file, not yet checked
        try:
            done = gdown.download(id=found[0].id, output=str(staged), quiet=not progress, resume=True)
        except Exception as error:
            raise DownloadError(f"gdown could not download {filename} from {folder} "
                                f"({_one_line(error)}); run the same command again to resume, or "
                                f"{by_hand}") from None
        if not done or not staged.is_file():
            raise DownloadError(f"gdown could not download {filename} from {folder}; run the same "
                                f"command again to resume, or {by_hand}")
        try:
            verify(staged, size, sha256)
            with open(staged, "rb") as stream:
                if stream.read(1) == b"<":  # a checkpoint is never HTML: Drive's quota or sign-in page
                    raise DownloadError(f"Google Drive sent a web page instead of {filename} (download "
                                        f"quota exceeded or sign-in asked); try again later, or {by_hand}")
        except DownloadError:
            staged.unlink(missing_ok=True)
            raise
        os.replace(staged, dest)
    return dest


def _one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _exclusive(lock_path: Path) -> filelock.FileLock:
    """A lock between processes (and threads) on a lock file beside the download, portable (filelock)."""
    return filelock.FileLock(str(lock_path))


def _fetch_unlocked(url, dest: Path, size, sha256, progress, retries, timeout) -> Path:
    part = dest.with_name(dest.name + ".part")
    cookies = http.cookiejar.CookieJar()  # Drive's older confirmation sets a download_warning cookie
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
    opener.cookies = cookies
    for attempt in range(retries + 1):
        try:
            _transfer(opener, url, part, size, progress, timeout, dest)
            break
        except DownloadError:
            if part.exists() and part.stat().st_size == 0:
                part.unlink()
            raise
        except _Interrupted as error:
            if attempt == retries:
                have = part.stat().st_size if part.exists() else 0
                raise DownloadError(f"download of {url} interrupted after {have:,} bytes ({error}); run the "
                                    f"same command again to resume from {part}") from None
    try:
        verify(part, size, sha256)
    except DownloadError:
        part.unlink()
        raise
    with open(part, "rb+") as stream:
        os.fsync(stream.fileno())
    os.replace(part, dest)
    return dest


def verify(path, size: int | None, sha256: str | None) -> None:
    """Raise DownloadError unless `path` has the published size and sha256 (each where known)."""
    path = Path(path)
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DownloadError(f"{path}: {actual:,} bytes, expected {size:,}: incomplete or another file")
    if sha256 is not None:
        digest = file_sha256(path)
        if digest != sha256.lower():
            raise DownloadError(f"{path}: sha256 {digest} does not match the published {sha256}: "
                                "corrupt or another file")


def verify_release(name: str, file=None, directory=None) -> str:
    """`weights verify`: a line describing NAME's file once it matches what was published."""
    release = _release(name, "verify")
    path = Path(file).expanduser() if file is not None else release_path(name, directory)
    if file is not None and not path.is_file():
        raise UnknownCheckpoint(f"--file {file}: {'not a file' if path.exists() else 'no such file'}")
    if not path.exists():
        raise DownloadError(f"verify {name}: {path} does not exist; `python -m onepfrac.weights download "
                            f"{name}` fetches it")
    if not path.is_file():
        raise DownloadError(f"verify {name}: {path} is not a file")
    verify(path, release.size, release.sha256)
    digest = file_sha256(path)
    checked = "size and sha256 match" if release.sha256 else ("size matches; no published sha256"
                                                               if release.size else "nothing published to compare")
    return f"{path}: {path.stat().st_size:,} bytes, sha256 {digest} ({checked})"


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- HTTP and Google Drive

def drive_file_id(url: str) -> str | None:
    """The file id of a Google Drive link (/file/d/ID/..., ?id=ID), None for other URLs."""
    parsed = urllib.parse.urlparse(url)
    if not parsed.netloc.endswith(("drive.google.com", "docs.google.com", "drive.usercontent.google.com")):
        return None
    match = re.search(r"/file/d/([0-9A-Za-z_-]+)", parsed.path)
    if match:
        return match.group(1)
    ids = urllib.parse.parse_qs(parsed.query).get("id")
    return ids[0] if ids else None


def direct_url(url: str) -> str:
    """A Drive sharing link as its download endpoint; any other URL unchanged."""
    drive_id = drive_file_id(url)
    if drive_id is None or "/folders/" in url:
        return url
    return f"https://drive.google.com/uc?export=download&id={drive_id}"


class _Interrupted(Exception):
    """The connection dropped mid-body; what arrived is in the .part file."""


def _transfer(opener, url, part: Path, size, progress, timeout, dest: Path) -> None:
    start = part.stat().st_size if part.exists() else 0
    if size is not None and start > size:  # longer than the file can be: not ours to resume
        part.unlink()
        start = 0
    if size is not None and start == size:
        return
    response = _open(opener, url, start, timeout, dest)
    if response is None:  # 416: the range starts at the end, the .part file is complete
        return
    with response:
        total = _content_length(response)
        if start and response.status == 206 and _range_start(response) == start:
            mode = "ab"
            total = _range_total(response) or (total + start if total is not None else None)
        else:  # the server sent the whole file (it ignored or refused the range)
            mode, start = "wb", 0
        if size is not None and total is not None and total != size:
            raise DownloadError(f"{url}: the server offers {total:,} bytes, expected {size:,}")
        from onepfrac.progress import progress as progress_bar
        with open(part, mode) as out, progress_bar(total=total, initial=start, unit="B", unit_scale=True,
                                                   desc=dest.name, enabled=progress) as bar:
            try:
                while chunk := response.read(CHUNK):
                    if mode == "wb" and out.tell() == 0 and chunk.lstrip()[:15].lower().startswith(
                            (b"<!doctype html", b"<html")):
                        raise DownloadError(f"{url}: the server sent a web page, not the file")
                    out.write(chunk)
                    bar.update(len(chunk))
            except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as error:
                raise _Interrupted(type(error).__name__) from error
            finally:
                out.flush()
                os.fsync(out.fileno())
    if total is not None and part.stat().st_size < total:
        raise _Interrupted("connection closed early")


def _open(opener, url, start, timeout, dest):
    """The file's response, after Drive's confirmation page(s) for large files; None on 416."""
    original = url
    url = direct_url(url)
    for _ in range(3):
        headers = {"User-Agent": USER_AGENT}
        if start:
            headers["Range"] = f"bytes={start}-"
        try:
            response = opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as error:
            if error.code == 416:
                return None
            raise DownloadError(f"{original}: HTTP {error.code} {error.reason}") from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            host = urllib.parse.urlparse(url).netloc
            raise DownloadError(
                f"cannot reach {host} ({reason}): no network? Download {original} by hand (in a browser) "
                f"and place the file at {dest}, or pass its path to --ckpt") from None
        if response.headers.get_content_type() != "text/html":
            return response
        with response:
            page = response.read(MAX_PAGE).decode("utf-8", "replace")
        next_url = _confirmation_url(page, url, opener)
        if next_url is None:
            raise DownloadError(f"{original}: the server sent a web page ('{_title(page)}') instead of the "
                                f"file (download quota exceeded, or not shared publicly?). Download it by "
                                f"hand and place it at {dest}")
        url = next_url
    raise DownloadError(f"{original}: the download confirmation kept repeating")


class _PageParser(HTMLParser):
    """Collects forms (action, hidden inputs) and links of a page."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"id": attrs.get("id"), "action": attrs.get("action") or "",
                               "method": (attrs.get("method") or "get").lower(), "inputs": {}})
        elif tag == "input" and self.forms and attrs.get("name"):
            self.forms[-1]["inputs"][attrs["name"]] = attrs.get("value") or ""
        elif tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def _confirmation_url(page: str, url: str, opener) -> str | None:
    """Where Drive's "can't scan this file for viruses" page leads, or None for another page.

    Newer pages hold a GET form (id "download-form", action drive.usercontent.google.com/download)
    with hidden id, export, confirm and uuid; older ones a link with ?confirm=TOKEN, or only a
    download_warning cookie whose value is the token.
    """
    parser = _PageParser()
    parser.feed(page)
    for form in parser.forms:
        if form["method"] == "get" and (form["id"] == "download-form" or {"confirm", "uuid"} & set(form["inputs"])):
            action = urllib.parse.urljoin(url, html.unescape(form["action"]))
            return f"{action}?{urllib.parse.urlencode(form['inputs'])}"
    for link in parser.links:
        if "confirm=" in link:
            return urllib.parse.urljoin(url, html.unescape(link))
    for cookie in opener.cookies:
        if cookie.name.startswith("download_warning"):
            parsed = urllib.parse.urlparse(url)
            query = dict(urllib.parse.parse_qsl(parsed.query), confirm=cookie.value)
            return urllib.parse.urlunparse(parsed._replace(query=urllib.parse.urlencode(query)))
    return None


def _title(page: str) -> str:
    match = re.search(r"<title>(.*?)</title>", page, re.S | re.I)
    return " ".join(html.unescape(match.group(1)).split())[:100] if match else "no title"


def _content_length(response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value and value.isdigit() else None


def _range_start(response) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _range_total(response) -> int | None:
    match = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


# ---------------------------------------------------------------- command line

def _table(directory) -> str:
    rows = [("name", "model", "dataset", "delta", "size", "sha256", "source")]
    for r in RELEASES.values():
        rows.append((r.name, r.model, r.dataset, "-" if r.delta is None else f"{r.delta:g}",
                     "unknown" if r.size is None else f"{r.size:,}",
                     "unknown" if r.sha256 is None else r.sha256[:16] + "...",
                     r.url or f"{r.page} ({r.note})"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    lines.append(f"\ncache: {cache_dir(directory)}  (--cache-dir or ${CACHE_ENV} to change)")
    lines.append("size/sha256 unknown: not published; a download is checked against the server's length only.")
    return "\n".join(lines)


def _export_source(spec, directory, progress: bool):
    """`export`'s CKPT as a local file (a URL or a name downloaded) and the model its release names."""
    release = RELEASES.get(str(spec))
    return resolve(spec, directory, progress=progress, option="CKPT"), release.model if release else None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:  # its own parser, in a module that imports torch: the rest stay light
        from onepfrac.train import export
        return export.command(argv[1:], prog="python -m onepfrac.weights export", resolve=_export_source)
    parser = Parser(prog="python -m onepfrac.weights",
                    description="Released checkpoints: list, download, locate, export.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("export", add_help=False,
                        help="write CKPT (file, URL or NAME) as a Hugging Face Hub model folder timm "
                             "loads alone: export CKPT OUT_DIR (see export --help)")
    listing = commands.add_parser("list", help="known released checkpoints")
    fetching = commands.add_parser("download", help="download NAME (or an http(s) URL) and print its path")
    fetching.add_argument("name", metavar="NAME", help="a released name (see list) or an http(s) URL")
    fetching.add_argument("--no-progress", action="store_true", help="no progress bar")
    where = commands.add_parser("where", help="print where NAME goes in the cache (to place it by hand)")
    where.add_argument("name", metavar="NAME", help="a released name (see list)")
    checking = commands.add_parser("verify", help="check NAME's cached file (or --file) against its published size and sha256")
    checking.add_argument("name", metavar="NAME", help="a released name (see list)")
    checking.add_argument("--file", type=Path, default=None, help="the file to check (default: NAME's place in the cache)")
    for command in (listing, fetching, where, checking):
        command.add_argument("--cache-dir", type=Path, default=None,
                             help=f"cache directory (default ${CACHE_ENV}, else {DEFAULT_CACHE})")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print(_table(args.cache_dir))
        elif args.command == "where":
            print(cache_dir(args.cache_dir) / _release(args.name, "where").filename)
        elif args.command == "verify":
            print(verify_release(args.name, args.file, args.cache_dir))
        else:
            if not args.name.startswith(("http://", "https://")) and not Path(args.name).expanduser().exists():
                _release(args.name, "download")  # an unknown name is bad input, whatever the cache
            check_cache_dir(args.cache_dir)
            path = resolve(args.name, args.cache_dir, progress=not args.no_progress, option="download")
            release = RELEASES.get(args.name)
            if release is not None and release.sha256 is None:
                print(f"{path.stat().st_size:,} bytes, sha256 {file_sha256(path)} (no published checksum "
                      "to compare with)", file=sys.stderr)
            print(path)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
