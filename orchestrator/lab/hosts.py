"""One lab host's root: an overlay of the cached image with keys and profile of its own,
booted by systemd-nspawn."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator.core.errors import LabError
from orchestrator.core.procs import descendants
from orchestrator.lab import image, packages, scenario, vendors
from orchestrator.lab.sh import run


@dataclass(frozen=True)
class BaseImage:
    """What every lab host is made from: the Debian root, the stand-in packages, our key."""

    rootfs: Path
    debs: dict[str, Path]
    client_key: Path


def make_root(name: str, profile: scenario.Profile, base: BaseImage, hdir: Path
              ) -> tuple[Path, str]:
    """An overlay of the base image set up as the profile says; its public host key."""
    upper, work, merged = hdir / "upper", hdir / "work", hdir / "merged"
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={base.rootfs},upperdir={upper},workdir={work}", merged])
    # Host keys of its own, recorded in the lab's known_hosts before the host ever boots.
    hostkey = merged / "etc/ssh/ssh_host_ed25519_key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f", hostkey])
    pub = hostkey.with_suffix(".pub").read_text(encoding="utf-8").split()
    sshdir = merged / "home" / image.ADMIN_USER / ".ssh"
    sshdir.mkdir(mode=0o700, exist_ok=True)
    (sshdir / "authorized_keys").write_text(
        base.client_key.with_suffix(".pub").read_text(encoding="utf-8"), encoding="utf-8")
    (sshdir / "authorized_keys").chmod(0o600)
    run(["chroot", merged, "chown", "-R", f"{image.ADMIN_USER}:{image.ADMIN_USER}",
         f"/home/{image.ADMIN_USER}/.ssh"])
    (merged / "etc/hostname").write_text(name + "\n", encoding="utf-8")
    (merged / "etc/hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost\n",
        encoding="utf-8")
    _apply_profile(merged, profile, base.debs)
    return merged, f"{pub[0]} {pub[1]}"


def _apply_profile(merged: Path, profile: scenario.Profile, debs: dict[str, Path]) -> None:
    """Install the profile's stand-in packages in a host's root and break what it says."""
    if profile.packages:
        stage = merged / "tmp/avm-lab"
        stage.mkdir(exist_ok=True)
        for key in profile.packages:
            shutil.copy2(debs[key], stage / debs[key].name)
        run(["chroot", merged, "dpkg", "-i",
             *[f"/tmp/avm-lab/{debs[k].name}" for k in profile.packages]])
        shutil.rmtree(stage)
    if profile.sshd_down:
        (merged / "etc/systemd/system/ssh.service").symlink_to("/dev/null")
    if profile.dead_apt_source:
        # A vendor repository that is gone: nothing answers there (the host's own loopback,
        # so no packet leaves the lab). apt-get update fails on it, every time.
        (merged / "etc/apt/sources.list.d/vendor-gone.list").write_text(
            "deb http://127.0.0.1:9/vendor bookworm main\n", encoding="utf-8")
    if profile.faults:
        # What the replacements' stand-ins meet on this host (lab/vendors.py): a cloud out of
        # reach, an expired build, a kernel the sensor does not support.
        faults = merged / vendors.FAULTS_FILE.lstrip("/")
        faults.parent.mkdir(parents=True, exist_ok=True)
        faults.write_text("".join(f"{f}\n" for f in profile.faults), encoding="utf-8")
    if profile.dpkg_interrupted:
        # What dpkg leaves when it is killed mid-run: a journal entry it has not folded in.
        # apt then refuses to work until `dpkg --configure -a` is run.
        updates = merged / "var/lib/dpkg/updates"
        (updates / "0000").write_text(
            "Package: klnagent64\nStatus: install ok half-configured\n"
            f"Version: {packages.STAND_INS['klnagent64'].version}\n", encoding="utf-8")


def node_binds(known_hosts: Path, apt_key: Path) -> list[str]:
    """systemd-nspawn options giving a node what `ansible-runner worker` needs from us."""
    paths = {Path(sys.prefix), known_hosts, apt_key}
    if not Path(sys.base_prefix).resolve().is_relative_to("/usr"):
        paths.add(Path(sys.base_prefix))  # a Python built elsewhere (pyenv): the venv's base
    return [f"--bind-ro={p}" for p in sorted(paths)]


# Each booted host runs its own systemd, which takes several inotify instances; the kernel's
# default of 128 per user stops the twentieth host or so ("Too many open files").
INOTIFY_MINIMUM = {"max_user_instances": 4096, "max_user_watches": 524288}


def raise_inotify_limits(log: list[str]) -> None:
    for name, minimum in INOTIFY_MINIMUM.items():
        path = Path("/proc/sys/fs/inotify") / name
        try:
            current = int(path.read_text().strip())
            if current < minimum:
                path.write_text(f"{minimum}\n")
                log.append(f"raised fs.inotify.{name} from {current} to {minimum}")
        except (OSError, ValueError) as exc:
            raise LabError(f"cannot raise fs.inotify.{name} to {minimum} ({exc}); "
                           f"set it with sysctl and retry") from exc


def container_init(nspawn_pid: int) -> int | None:
    """The container's PID 1 (systemd), a descendant of the systemd-nspawn process."""
    for pid in descendants(nspawn_pid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                return pid
        except OSError:
            continue
    return None
