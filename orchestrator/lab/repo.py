"""The lab's air-gapped sources: a signed internal apt repository and a ClamAV signature source.

Lab hosts reach no registry. Like an agency's internal mirror, the control machine fetches the
replacement's Debian packages once, signs a flat repository with a lab key the hosts are told to
trust, and serves it with a signature database over HTTP on the lab bridge only.
"""

from __future__ import annotations

import base64
import filecmp
import hashlib
import os
import re
import shutil
from pathlib import Path

from orchestrator.core.errors import LabError
from orchestrator.core.protection import EICAR_B64
from orchestrator.lab.image import cache_root
from orchestrator.lab.sh import run

REPLACEMENT_PACKAGES = ("clamav-daemon", "clamav-freshclam", "clamdscan")
SIGNATURE_NAME = "Avmigrate.Lab.EICAR"
KEY_UID = "avmigrate lab repository <lab@avmigrate.invalid>"


def eicar() -> bytes:
    return base64.b64decode(EICAR_B64)


def _gnupg_home() -> Path:
    home = cache_root() / "lab-gpg"
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    return home


def _gpg(*args: str | Path) -> str:
    env = dict(os.environ, GNUPGHOME=str(_gnupg_home()))
    return run(["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "",
                *args], env=env).stdout


def ensure_signing_key() -> None:
    env = dict(os.environ, GNUPGHOME=str(_gnupg_home()))
    listed = run(["gpg", "--batch", "--list-secret-keys", KEY_UID], env=env, check=False)
    if listed.returncode != 0:
        _gpg("--quick-gen-key", KEY_UID, "ed25519", "sign", "never")


def download_replacement_debs(image_root: Path, log: list[str]) -> Path:
    """Fetch what a host of the image lacks to install the replacement; cached by image."""
    key = hashlib.sha256(
        (image_root.parent.name + "|" + ",".join(REPLACEMENT_PACKAGES)).encode()
    ).hexdigest()[:16]
    pool = cache_root() / f"debs-{key}"
    if (pool / "COMPLETE").is_file():
        return pool
    log.append("fetching the replacement's Debian packages for the internal repository")
    shutil.rmtree(pool, ignore_errors=True)
    pool.mkdir(parents=True)
    # The control machine's apt resolves against the image's dpkg status: what a host lacks.
    # An empty archive cache, or apt leaves out what this machine happens to have cached.
    empty = pool / ".archives"
    (empty / "partial").mkdir(parents=True)
    out = run([
        "apt-get", "-o", f"Dir::State::status={image_root / 'var/lib/dpkg/status'}",
        "-o", f"Dir::Cache::archives={empty}",
        "install", "--print-uris", "-qq", "-y", "--no-install-recommends",
        *REPLACEMENT_PACKAGES,
    ]).stdout
    specs = []
    for line in out.splitlines():
        m = re.match(r"^'[^']+' (\S+?)_(\S+?)_(\S+?)\.deb ", line)
        if m:
            specs.append(f"{m.group(1)}={m.group(2).replace('%3a', ':')}")
    if not specs:
        raise LabError("apt found nothing to download for ClamAV; run `apt-get update` and retry")
    run(["sh", "-c", 'cd "$1" && shift && apt-get download -qq "$@"', "sh", pool, *specs],
        timeout=1200)
    shutil.rmtree(empty)
    (pool / "COMPLETE").write_text("\n".join(specs) + "\n", encoding="utf-8")
    return pool


def build_signatures(out_dir: Path) -> Path:
    """A ClamAV database built here (the public mirrors are out of reach): EICAR by MD5."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "daily.cud"
    if target.is_file():
        return target
    work = out_dir / ".build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    body = eicar()
    (work / "daily.hdb").write_text(
        f"{hashlib.md5(body).hexdigest()}:{len(body)}:{SIGNATURE_NAME}\n",  # noqa: S324
        encoding="utf-8",
    )
    (work / "COPYING").write_text("avmigrate lab signatures, for testing only\n",
                                  encoding="utf-8")
    # sigtool asks for a version number and a builder name on its standard input.
    build = 'cd "$1" && printf "1\\navmigrate-lab\\n" | sigtool --build=daily.cud --unsigned'
    run(["sh", "-c", build, "sh", work])
    (work / "daily.cud").rename(target)
    shutil.rmtree(work, ignore_errors=True)
    return target


def build_repository(repo: Path, debs: list[Path]) -> Path:
    """Write a flat, signed apt repository into repo; return the public key file."""
    ensure_signing_key()
    repo.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        dest = repo / deb.name
        # A rebuilt stand-in keeps its file name: compared, not only looked for.
        if not dest.exists() or not filecmp.cmp(deb, dest, shallow=False):
            shutil.copy2(deb, dest)
    packages = run(["sh", "-c", 'cd "$1" && dpkg-scanpackages --multiversion . /dev/null',
                    "sh", repo]).stdout
    (repo / "Packages").write_text(packages, encoding="utf-8")
    release = run(["apt-ftparchive", "-o", "APT::FTPArchive::Release::Origin=avmigrate-lab",
                   "-o", "APT::FTPArchive::Release::Suite=lab", "release", repo]).stdout
    (repo / "Release").write_text(release, encoding="utf-8")
    _gpg("--local-user", KEY_UID, "--clearsign", "--output", repo / "InRelease", repo / "Release")
    key_file = repo.parent / "avmigrate-lab-archive.gpg"
    _gpg("--output", key_file, "--export", KEY_UID)
    return key_file
