"""The lab's base image: one debootstrap of Debian 12, cached outside the clone by content."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from orchestrator.core.errors import LabError
from orchestrator.lab.sh import run

SUITE = "bookworm"
INCLUDE = (
    "openssh-server",
    "python3",
    "python3-apt",
    "systemd",
    "systemd-sysv",
    "dbus",
    "procps",
    "iproute2",
    "sudo",
)
ADMIN_USER = "avadmin"
# Bump when _customise changes, so cached images built by older code are not reused.
IMAGE_RECIPE = 3

SSHD_LAB_CONF = """\
# avmigrate lab: hosts are reached as an admin user with a key; root cannot log in.
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


def cache_root() -> Path:
    return Path(os.environ.get("AVMIGRATE_CACHE", "/var/cache/avmigrate"))


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """One lab at a time builds or reads the shared cache (image, packages, signing key), so
    that labs can be brought up side by side."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (or AVMIGRATE_DEBIAN_MIRROR)."""
    env = os.environ.get("AVMIGRATE_DEBIAN_MIRROR")
    if env:
        return env
    candidates: list[str] = []
    sources_d = Path("/etc/apt/sources.list.d")
    for path in sorted(sources_d.glob("*.sources")) if sources_d.is_dir() else []:
        for stanza in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
            fields = {m.group(1).lower(): m.group(2).strip()
                      for m in re.finditer(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M)}
            suites = fields.get("suites", "").split()
            if SUITE in suites and "security" not in fields.get("uris", ""):
                candidates.extend(fields.get("uris", "").split())
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.is_file():
        for line in sources_list.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                candidates.append(parts[1])
    for uri in candidates:
        if uri.startswith(("http://", "https://")):
            return uri
    raise LabError(
        "cannot find a Debian bookworm mirror in this machine's apt sources; "
        "set AVMIGRATE_DEBIAN_MIRROR to one"
    )


def image_key() -> str:
    text = f"{SUITE}|{','.join(INCLUDE)}|minbase|{ADMIN_USER}|{IMAGE_RECIPE}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def image_dir() -> Path:
    return cache_root() / f"image-{image_key()}"


def ensure_image(log: list[str]) -> Path:
    """Return the cached root filesystem, building it first if absent (about a minute)."""
    final = image_dir()
    rootfs = final / "rootfs"
    if (final / "COMPLETE").is_file():
        return rootfs
    if os.geteuid() != 0:
        raise LabError("building the lab image needs root; run as root (sudo)")
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap is not installed; run `make deps` first")
    building = cache_root() / f".building-{image_key()}-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    log.append(f"building lab image {final.name} (debootstrap {SUITE}, about a minute)")
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(INCLUDE)}",
            SUITE,
            building / "rootfs",
            debian_mirror(),
        ],
        timeout=1200,
    )
    _customise(building / "rootfs")
    (building / "COMPLETE").write_text(image_key() + "\n", encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    building.rename(final)
    return rootfs


def _customise(root: Path) -> None:
    def chroot(*argv: str) -> None:
        run(["chroot", root, *argv])

    chroot("useradd", "--create-home", "--shell", "/bin/bash", ADMIN_USER)
    chroot("passwd", "--lock", "root")
    sudoers = root / "etc/sudoers.d" / ADMIN_USER
    sudoers.write_text(f"{ADMIN_USER} ALL=(ALL) NOPASSWD:ALL\n", encoding="utf-8")
    sudoers.chmod(0o440)
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ssh/sshd_config.d/avmigrate-lab.conf").write_text(SSHD_LAB_CONF, encoding="utf-8")
    # Every host gets host keys of its own at lab up; none may be shared through the image.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Air-gapped like an agency network: the only package source is the one the inventory names.
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    for src in (root / "etc/apt/sources.list.d").glob("*"):
        src.unlink()
    for cached in (root / "var/lib/apt/lists").glob("*_*"):
        cached.unlink()
    (root / "etc/machine-id").write_text("", encoding="utf-8")
