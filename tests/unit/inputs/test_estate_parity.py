"""The user's inventory as Ansible reads it: avmigrate's loaders against `ansible-inventory
--list` (the real command, as a subprocess) on the same estate.

- the estate fixture (tests/fixtures/estate: ansible.cfg, aliases, group_vars/all.yml, a
  vault-encrypted group_vars file, host_vars with each host's address): Ansible's path, since
  it holds vault data;
- generated estates (hypothesis): groups with children and priorities, inventory-file
  variables, group_vars/ and host_vars/ as files (bare, .yml, .yaml, .json) and directories
  (several files, nested, hidden and backup files that Ansible skips), connection values
  spread over every layer: the fast loader must read them itself and give the same hosts,
  groups and variables, and so must Ansible's path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.inputs import inventory, staticinv, varsdirs
from orchestrator.inputs.sources import Sources

ESTATE = Path(__file__).parents[2] / "fixtures" / "estate"
ANSIBLE_INVENTORY = str(Path(sys.executable).parent / "ansible-inventory")


def ansible_inventory(cwd: Path, *args: str) -> dict[str, tuple[tuple[str, ...], dict[str, Any]]]:
    """host -> (groups but 'all', variables), by `ansible-inventory --list`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    done = subprocess.run([ANSIBLE_INVENTORY, "--list", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=True, timeout=120)
    data = json.loads(done.stdout)
    hostvars = data["_meta"]["hostvars"]
    parents: dict[str, set[str]] = {}
    direct: dict[str, set[str]] = {}
    for group, body in data.items():
        if group == "_meta":
            continue
        for child in body.get("children", []):
            parents.setdefault(child, set()).add(group)
        for host in body.get("hosts", []):
            direct.setdefault(host, set()).add(group)

    def ancestors(group: str) -> set[str]:
        out = {group}
        for p in parents.get(group, ()):
            out |= ancestors(p)
        return out

    result = {}
    for host in set(hostvars) | set(direct):
        groups: set[str] = set()
        for g in direct.get(host, ()):
            groups |= ancestors(g)
        result[host] = (tuple(sorted(groups - {"all"})), hostvars.get(host, {}))
    return result


def ours(src: Sources, *, fast: bool) -> dict[str, tuple[tuple[str, ...], dict[str, Any]]]:
    return {n: (g, {**gv, **own}) for n, g, gv, own in inventory.read_hosts(src, fast=fast)}


def test_the_estate_fixture_reads_as_ansible_inventory_reads_it(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    estate = tmp_path / "estate"
    shutil.copytree(ESTATE, estate)
    (estate / ".vault-pass").chmod(0o600)
    theirs = ansible_inventory(estate)  # ansible.cfg: the inventory and the vault identity
    monkeypatch.chdir(estate)
    src = Sources((estate / "inventories" / "prod" / "hosts.ini",),
                  vault_ids=(f"prod@{estate / '.vault-pass'}",))
    mine = ours(src, fast=True)
    assert sorted(mine) == sorted(theirs) == ["db_prod_01", "web_prod_01", "web_prod_02"]
    for host, (groups, variables) in theirs.items():
        my_groups, my_vars = mine[host]
        assert my_groups == groups, host
        assert set(my_vars) == set(variables), host
        for key, value in variables.items():
            if key == "vault_become_password":  # decrypted by ansible-inventory; never by us
                assert my_vars[key].startswith("<vaulted:"), my_vars[key]
                assert value not in json.dumps(my_vars)
            else:
                assert my_vars[key] == value, (host, key)
    # The addresses come from host_vars/, the user from group_vars/all.yml.
    assert mine["web_prod_01"][1]["ansible_host"] == "10.20.0.11"
    assert mine["db_prod_01"][1]["ansible_user"] == "avadmin"
    assert "web-servers" in mine["web_prod_02"][0] and "linux_servers" in mine["web_prod_02"][0]


def test_without_its_vault_password_the_estate_is_one_clear_line(tmp_path: Path) -> None:
    src = Sources((ESTATE / "inventories" / "prod" / "hosts.ini",))
    with pytest.raises(inventory.InventoryError, match="--vault-id, --vault-password-file or "
                       "--ask-vault-pass"):
        inventory.load(src)


def test_limit_selects_as_ansible_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    estate = tmp_path / "estate"
    shutil.copytree(ESTATE, estate)
    monkeypatch.chdir(estate)
    ids = (f"prod@{estate / '.vault-pass'}",)
    hosts = estate / "inventories" / "prod" / "hosts.ini"
    for pattern in ("web-servers", "linux_servers:!db-servers", "web_prod_0*", "~db_.*",
                    "linux_servers:&db-servers", "web_prod_01,db_prod_01"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        listed = subprocess.run([ANSIBLE_INVENTORY.replace("-inventory", ""), pattern,
                                 "--list-hosts", "--limit", pattern], cwd=estate, env=env,
                                capture_output=True, text=True, check=True, timeout=120)
        theirs = sorted(ln.strip() for ln in listed.stdout.splitlines()[1:] if ln.strip())
        for fast in (True, False):
            got = sorted(inventory.load(Sources((hosts,), pattern, ids), fast=fast).names())
            assert got == theirs, (pattern, fast)


# ---- generated estates ---------------------------------------------------------------------
NAMES = st.sampled_from(["web", "db", "dmz", "east", "linux-servers", "g_1"])
VALUES = st.one_of(st.integers(-5, 5), st.booleans(), st.sampled_from(["a", "b", "x y"]),
                   st.lists(st.integers(0, 3), max_size=2),
                   st.dictionaries(st.sampled_from(["k", "l"]), st.integers(0, 3), max_size=2))
KEYS = st.sampled_from(["ansible_host", "ansible_port", "ansible_user", "site", "role", "n"])
VARS = st.dictionaries(KEYS, VALUES, max_size=3)
FORMS = st.sampled_from(["yml", "yaml", "json", "bare", "dir"])


@st.composite
def estates(draw: st.DrawFn) -> dict[str, Any]:
    groups = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    hosts = [f"h{i}_srv" for i in range(draw(st.integers(1, 5)))]
    return {
        "groups": groups,
        "children": {g: draw(st.sets(st.sampled_from(groups))) - {g} for g in groups[:1]},
        "members": {h: draw(st.sets(st.sampled_from(groups), max_size=2)) for h in hosts},
        "inv_group_vars": {g: draw(VARS) for g in groups},
        "inv_host_vars": {h: draw(VARS) for h in hosts},
        "priority": {g: draw(st.none() | st.integers(0, 3)) for g in groups},
        "group_files": {g: (draw(FORMS), draw(VARS), draw(VARS))
                        for g in [*groups, "all"] if draw(st.booleans())},
        "host_files": {h: (draw(FORMS), draw(VARS), draw(VARS)) for h in hosts
                       if draw(st.booleans())},
    }


def _value(v: Any) -> str:
    return json.dumps(v)


def _host_line(h: str, e: dict[str, Any]) -> str:
    return f"{h} " + " ".join(f"{k}='{_value(v)}'" for k, v in e["inv_host_vars"][h].items())


def _inventory_lines(e: dict[str, Any]) -> list[str]:
    lines = [_host_line(h, e) for h, groups in e["members"].items() if not groups]
    for g in e["groups"]:
        lines.append(f"[{g}]")
        lines += [_host_line(h, e) for h, groups in e["members"].items() if g in groups]
        variables = dict(e["inv_group_vars"][g])
        if e["priority"][g] is not None:
            variables["ansible_group_priority"] = e["priority"][g]
        lines.append(f"[{g}:vars]")
        lines += [f"{k}='{_value(v)}'" for k, v in variables.items()]
    for parent, children in e["children"].items():
        lines.append(f"[{parent}:children]")
        lines += sorted(children)
    return lines


def _vars_file(base: Path, name: str, form: str, first: dict[str, Any],
               second: dict[str, Any]) -> None:
    base.mkdir(exist_ok=True)
    if form == "dir":
        (base / name / "sub").mkdir(parents=True)
        (base / name / "10-main.yml").write_text(json.dumps(first))
        (base / name / "sub" / "20-more.yaml").write_text(json.dumps(second))
        (base / name / ".hidden.yml").write_text("ignored: true\n")
        (base / name / "30-backup.yml~").write_text("ignored: true\n")
        (base / name / "notes.txt").write_text("ignored: true\n")
    else:
        suffix = {"bare": ""}.get(form, f".{form}")
        (base / f"{name}{suffix}").write_text(json.dumps({**first, **second}))


def write_estate(root: Path, e: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    inv = root / "hosts.ini"
    inv.write_text("\n".join(_inventory_lines(e)) + "\n")
    for kind, files in (("group_vars", e["group_files"]), ("host_vars", e["host_files"])):
        for name, (form, first, second) in files.items():
            _vars_file(root / kind, name, form, first, second)
    return inv


@given(estates())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
def test_generated_estates_read_as_ansible_inventory_reads_them(tmp_path: Path,
                                                                e: dict[str, Any]) -> None:
    root = tmp_path / f"e{abs(hash(json.dumps(e, sort_keys=True, default=list)))}"
    inv = write_estate(root, e)
    extra = varsdirs.VarsDirs([root])
    staticinv.load(inv, [extra] if extra else [])  # the fast loader reads it (no fallback)
    theirs = ansible_inventory(root, "-i", str(inv))
    src = Sources((inv,))
    for fast in (True, False):
        mine = ours(src, fast=fast)
        assert sorted(mine) == sorted(theirs)
        for host, (groups, variables) in theirs.items():
            assert mine[host][0] == groups, (host, fast)
            assert mine[host][1] == variables, (host, fast)
    shutil.rmtree(root)


def test_the_fixture_without_vault_data_takes_the_fast_loader_and_agrees(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same estate with its vault file taken out: avmigrate's own loader reads it (no
    fallback), and gives what ansible-inventory gives; so does --limit."""
    estate = tmp_path / "estate"
    shutil.copytree(ESTATE, estate)
    (estate / "inventories" / "prod" / "group_vars" / "linux_servers" / "vault.yml").unlink()
    (estate / "ansible.cfg").write_text("[defaults]\ninventory = inventories/prod/hosts.ini\n")
    monkeypatch.chdir(estate)
    hosts = estate / "inventories" / "prod" / "hosts.ini"
    assert inventory._fast_hosts(hosts, None)
    theirs = ansible_inventory(estate)
    assert ours(Sources((hosts,)), fast=True) == theirs
    for pattern in ("web-servers", "linux_servers:!db-servers", "~db_.*", "web_prod_0*"):
        got = sorted(inventory.load(Sources((hosts,), pattern), fast=True).names())
        assert got == sorted(inventory.load(Sources((hosts,), pattern), fast=False).names())


VAULT = "vault-test-password"


def _encrypt(text: str, tmp_path: Path) -> str:
    plain = tmp_path / "plain.yml"
    plain.write_text(text)
    subprocess.run([str(Path(sys.executable).parent / "ansible-vault"), "encrypt",
                    "--vault-password-file", str(tmp_path / "pass"), str(plain)],
                   check=True, capture_output=True)
    return plain.read_text()


def test_no_vault_value_of_any_type_is_kept_nor_its_digest(tmp_path: Path) -> None:
    """Values from a vault file (strings, numbers, booleans) and templated connection values
    that use one become digests of the ciphertext and the name: never the value, nor a
    digest of it that could be guessed offline."""
    (tmp_path / "pass").write_text(VAULT)
    inv = tmp_path / "inv"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "hosts.ini").write_text("[web]\nweb1 ansible_host=10.0.0.1\n")
    (inv / "group_vars" / "web.yml").write_text(_encrypt(
        "vault_word: s3cret\nvault_pin: 123456\nvault_flag: true\n", tmp_path))
    (inv / "group_vars" / "all.yml").write_text(
        'ansible_ssh_common_args: "-o SetEnv=X={{ vault_word }}"\n')
    src = Sources((inv / "hosts.ini",), vault_ids=(f"default@{tmp_path / 'pass'}",))
    host = inventory.load(src).hosts[0]
    kept = json.dumps(host.vars)
    for secret in ("s3cret", "123456", "true", "True"):
        assert secret not in kept, kept
    import hashlib  # noqa: PLC0415

    assert hashlib.sha256(b"s3cret").hexdigest()[:16] not in kept
    assert all(str(host.vars[k]).startswith("<vaulted:")
               for k in ("vault_word", "vault_pin", "vault_flag"))
    assert host.vars["ansible_ssh_common_args"].startswith("-o SetEnv=X=<vaulted:")


def test_a_limit_never_drops_the_execution_nodes(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("[web]\nweb1\nweb2\n[db]\ndb1\n[execution_nodes]\nnode1\n")
    for fast in (True, False):
        loaded = inventory.load(Sources((inv,), "web:!web2"), fast=fast)
        assert loaded.names() == ("web1",) and [n.name for n in loaded.nodes] == ["node1"]


@given(estates(), estates())
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
def test_a_playbook_directorys_vars_apply_as_ansible_applies_them(tmp_path: Path,
                                                                  e: dict[str, Any],
                                                                  play: dict[str, Any]) -> None:
    """`--playbook-dir`: its group_vars/ and host_vars/ sit above the inventory's, each kind
    in Ansible's order (all of both, then the groups of each), as `ansible-inventory
    --playbook-dir` resolves them."""
    root = tmp_path / f"p{abs(hash(json.dumps([e, play], sort_keys=True, default=list)))}"
    inv = write_estate(root / "inv", e)
    books = root / "books"
    books.mkdir()
    for kind, files in (("group_vars", play["group_files"]), ("host_vars", play["host_files"])):
        for name, (form, first, second) in files.items():
            if kind == "host_vars" and name not in e["members"]:
                continue
            _vars_file(books / kind, name, form, first, second)
    theirs = ansible_inventory(root, "-i", str(inv), "--playbook-dir", str(books))
    src = Sources((inv,), playbook_dir=books)
    for fast in (True, False):
        mine = ours(src, fast=fast)
        assert sorted(mine) == sorted(theirs)
        for host, (groups, variables) in theirs.items():
            assert mine[host] == (groups, variables), (host, fast)
    shutil.rmtree(root)
