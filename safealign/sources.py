"""Data sources given as URLs: downloaded once into the cache, checked against a pinned sha256, read offline after.

A benchmark names a file by an immutable URL (a repository file at a commit) and its sha256:

    [eval_prompts.helpful]
    source = "https://raw.githubusercontent.com/<owner>/<repo>/<commit>/<path>.json"
    sha256 = "<64 hex digits>"

The first run downloads it into `<cache>/downloads/`, atomically and only if the hash matches; every later run
reads the kept copy without the network. A source with no sha256 is taken as it comes on first download and its
hash is logged so that it can be pinned. Hub datasets are pinned by `revision` (a commit) instead (safealign.data).
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from safealign import BenchError

TIMEOUT_S = 60


def is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_path(url: str, downloads: Path) -> Path:
    """Where a URL's file is kept: a folder per URL (so two files of one name never meet), the URL's file name."""
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "download"
    return downloads / hashlib.sha256(url.encode()).hexdigest()[:16] / name


def fetch(url: str, sha256: str | None, downloads: Path, log=print) -> Path:
    """The local copy of `url`, downloaded if it is not kept yet; a kept or new file whose hash is not the pinned
    one is an error (and a new one is not kept)."""
    want = (sha256 or "").lower()
    path = cached_path(url, downloads)
    if path.exists():
        got = sha256_of(path)
        if want and got != want:
            raise BenchError(f"{path} (kept copy of {url}) has sha256 {got}, the benchmark pins {want}: delete it "
                             "to download again, or fix the pinned sha256")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r, open(tmp, "wb") as f:
            while block := r.read(1 << 20):
                f.write(block)
    except (urllib.error.URLError, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise BenchError(f"could not download {url} ({reason}): run once with network access, or download it by "
                         f"hand to {path}") from None
    got = sha256_of(tmp)
    if want and got != want:
        tmp.unlink()
        raise BenchError(f"{url} downloaded with sha256 {got}, but the benchmark pins {want}: the file changed "
                         "upstream or the pin is wrong; not kept")
    os.replace(tmp, path)
    log(f"downloaded {url} -> {path} (sha256 {got}" + (")" if want else "; not pinned: add sha256 = \"" + got + "\")"))
    return path


def resolve(source: str, sha256: str | None, downloads: Path, log=print) -> str:
    """A source as safealign.data reads it: a URL becomes its checked local copy; a local file with a pinned sha256
    is checked against it; hub ids pass through."""
    if is_url(source):
        return str(fetch(source, sha256, downloads, log))
    if sha256 and Path(source).is_file() and sha256_of(Path(source)) != sha256.lower():
        raise BenchError(f"{source} has sha256 {sha256_of(Path(source))}, the benchmark pins {sha256.lower()}: "
                         "restore the file or fix the pinned sha256")
    return source
