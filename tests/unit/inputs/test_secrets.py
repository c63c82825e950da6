"""Credentials: refused when others can read them, never shown, handed over through a FIFO."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from ansible.parsing.vault import VaultLib, VaultSecret

from orchestrator.inputs import secrets
from orchestrator.inputs.secrets import Secrets, SecretsError, VaultChannel

CANARY = "canary-Zq9!x y$(id)"


def write(path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(mode)
    return path


def test_a_private_credentials_file_loads(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yml", f"kesl_uninstall_password: '{CANARY}'\n")
    loaded = secrets.load(path, {"kesl_uninstall_password"})
    assert loaded.values == {"kesl_uninstall_password": CANARY}
    assert CANARY not in repr(loaded) and CANARY not in str(loaded)
    assert loaded.ansible_vars() == {"avmigrate_secret_kesl_uninstall_password": CANARY}


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_credentials_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "c.yml", f"kesl_uninstall_password: '{CANARY}'\n", mode)
    with pytest.raises(SecretsError, match=r"can be read by others .*chmod 600"):
        secrets.load(path, {"kesl_uninstall_password"})


@pytest.mark.parametrize("text", [
    f"kesl_uninstall_password: [{CANARY}\n",
    f"nope: '{CANARY}'\n",
    f"- '{CANARY}'\n",
    "kesl_uninstall_password: 12\n",
])
def test_a_bad_credentials_file_never_quotes_its_content(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "c.yml", text)
    with pytest.raises(SecretsError) as caught:
        secrets.load(path, {"kesl_uninstall_password"})
    assert CANARY not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_vaulted_credentials_file(tmp_path: Path) -> None:
    vault = VaultLib([("default", VaultSecret(b"s3cret-vault"))])
    path = write(tmp_path / "c.vault", vault.encrypt(f"become_password: '{CANARY}'\n"))
    assert CANARY.encode() not in path.read_bytes()
    with pytest.raises(SecretsError, match="pass --vault-password-file"):
        secrets.load(path, set())
    wrong = write(tmp_path / "wrong", "nope\n")
    with pytest.raises(SecretsError, match="cannot be decrypted"):
        secrets.load(path, set(), wrong)
    good = write(tmp_path / "pw", "s3cret-vault\n")
    assert secrets.load(path, set(), good).ansible_vars() == {"ansible_become_password": CANARY}


def test_the_vault_channel_serves_a_one_time_password_and_leaves_nothing(tmp_path: Path
                                                                         ) -> None:
    work = tmp_path / "pdd"
    work.mkdir(mode=0o700)
    channel = VaultChannel(Secrets({"kesl_uninstall_password": CANARY}), work)
    encrypted = channel.vars_file.read_bytes()
    assert CANARY.encode() not in encrypted
    assert channel.vars_file.stat().st_mode & 0o077 == 0
    assert CANARY not in channel.script.read_text()
    # One ansible-playbook run asks once; whoever asks after it gets nothing.
    got = [subprocess.run([str(channel.script)], capture_output=True, timeout=10,
                          check=True).stdout for _ in range(2)]
    assert len(got[0]) > 30 and got[1] == b""
    assert channel.served == 1
    plain = VaultLib([("default", VaultSecret(got[0]))]).decrypt(encrypted).decode()
    assert CANARY in plain
    assert channel.cmdline() == ["-e", f"@{channel.vars_file}", "--vault-id",
                                 f"avmigrate@{channel.script}"]
    channel.close()
    assert list(work.iterdir()) == []
    assert not channel.socket_path.exists()


def test_closing_an_unused_channel_does_not_hang(tmp_path: Path) -> None:
    channel = VaultChannel(Secrets({"become_password": CANARY}), tmp_path)
    channel.close()
    assert not channel.script.exists()


def test_a_credentials_file_with_an_impossible_date_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yml", "kesl_uninstall_password: 2026-02-30\n")
    with pytest.raises(SecretsError, match="not valid YAML"):
        secrets.load(path, {"kesl_uninstall_password"})


def test_the_vault_password_goes_only_to_a_process_of_this_run(tmp_path: Path) -> None:
    """A process of the same user that this run did not start (here, detached with setsid,
    its parent init) asks first: it gets nothing, and the step's own ask still works."""
    work = tmp_path / "pdd"
    work.mkdir(mode=0o700)
    channel = VaultChannel(Secrets({"kesl_uninstall_password": CANARY}), work)
    stranger = tmp_path / "stranger.out"
    done = tmp_path / "stranger.done"
    subprocess.run(["setsid", "-f", "sh", "-c", f"{channel.script} > {stranger}; touch {done}"],
                   check=True, timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not done.exists():
        time.sleep(0.1)
    assert done.exists(), "the stranger's ask never returned"
    assert stranger.read_bytes() == b""
    assert channel.served == 0
    mine = subprocess.run([str(channel.script)], capture_output=True, timeout=10, check=True)
    assert len(mine.stdout) > 30 and channel.served == 1
    channel.close()
