"""The fast static loader gives the same hosts, groups and variables as Ansible's loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.inputs import invbuilder, inventory, staticini, staticinv

ROOT = Path(__file__).resolve().parents[3]

# Ansible's own documentation example (ini plugin), comments and all.
ANSIBLE_DOC_INI = """\
host1 # this is 'ungrouped'
host2 ansible_host=127.0.0.1 ansible_port=44
host3 ansible_host=127.0.0.1 ansible_port=45

[web]
host1
host2 ansible_port=222 # defined inline, interpreted as an integer

[web:vars]
http_port=8080 # all members of 'web' will inherit these
myvar=23 # defined in a :vars section

[web:children] # child groups will automatically add their hosts to parent group
apache
nginx

[apache]
tomcat1
tomcat2 myvar=34 # host specific vars override group vars
tomcat3 mysecret="'03#pa33w0rd'" # proper quoting to prevent value changes

[nginx]
jenkins1

[nginx:vars]
has_java = True # vars in child groups override same in parent

[all:vars]
has_java = False # 'all' is 'top' parent

[g1]
host4

[g2]
host4
"""

TRICKY_INI = """\
[dc:children]
east
west

[east]
e[01:03].agency.example ansible_user=ops
e9.agency.example:2222 tags="['a', 'b']" level=007 ratio=1.5 on=yes off=False note='a b'
e8.agency.example ip=10.1.2.3 dict="{'k': 1}" neg=-4 big=1_000 tup="(1, 2)" # a comment

[west]
w[a:c].agency.example

[west:vars]
ansible_group_priority=5
who=west

[east:vars]
who=east

[dc:vars]
who=dc
depth=1

[all:vars]
who=all
"""

TRICKY_YAML = """\
all:
  vars:
    who: all
    nested: {a: 1, b: [1, 2]}
  hosts:
    lonely.agency.example:
  children:
    dc:
      vars: {who: dc, when: 2026-12-01, yes_word: yes}
      children:
        east:
          vars: {who: east}
          hosts:
            e[1:2].agency.example:
              ansible_user: ops
            e9.agency.example:2222:
        west:
          vars: {who: west, ansible_group_priority: 3}
          hosts:
            w1.agency.example: {level: "007", n: 7, f: 0.5, "null_value": null}
            e1.agency.example: {who: host}
    empty_group:
"""


def _merged(found: list[invbuilder.Found]) -> list[tuple[str, tuple[str, ...], dict[str, Any]]]:
    return [(n, g, {**gv, **own}) for n, g, gv, own in found]


def _ansible(path: Path) -> list[tuple[str, tuple[str, ...], dict[str, Any]]]:
    return _merged(inventory.read_hosts(path, fast=False))


def _fast(path: Path) -> list[tuple[str, tuple[str, ...], dict[str, Any]]]:
    """The fast loader's answer; failing if it declined the file (that would hide a gap)."""
    got = list(staticinv.load(path))
    return _merged(inventory.read_hosts(path, fast=True)) if got else []


@pytest.mark.parametrize(("name", "text"), [
    ("doc.ini", ANSIBLE_DOC_INI), ("tricky.ini", TRICKY_INI), ("tricky.yml", TRICKY_YAML)])
def test_same_as_ansible_on_hand_written_inventories(tmp_path: Path, name: str,
                                                     text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    fast = _fast(path)
    assert fast, "the fast loader found no hosts"
    assert fast == _ansible(path)
    inventory.load(path)  # and every host passes our own checks


def test_same_as_ansible_on_the_shipped_example() -> None:
    path = ROOT / "inventory" / "example.yml"
    assert _fast(path) == _ansible(path)


@pytest.mark.parametrize("text", [
    "all:\n  hosts:\n    a.example:\n      secret: !vault |\n        $ANSIBLE_VAULT;1.1;AES256\n",
    "all:\n  hosts:\n    a.example:\n      v: !unsafe '{{ x }}'\n",
    "plugin: constructed\n",
    "[web\nhost1\n",
])
def test_declines_what_it_does_not_read(tmp_path: Path, text: str) -> None:
    path = tmp_path / ("inv.yml" if not text.startswith("[") else "inv.ini")
    path.write_text(text)
    with pytest.raises(invbuilder.Unsupported):
        staticinv.load(path)


def test_yaml_tags_still_load_through_ansible(tmp_path: Path) -> None:
    path = tmp_path / "inv.yml"
    path.write_text("all:\n  hosts:\n    a.example:\n      v: !unsafe '{{ x }}'\n")
    inv = inventory.load(path)
    assert inv.get("a.example").vars["v"] == "{{ x }}"


# ---- generated inventories -------------------------------------------------------------------
VALUES = st.sampled_from([
    "1", "0", "-3", "007", "1.5", "1e3", "0x1f", "1_000", "True", "false", "None", "yes",
    "10.0.0.1", "srv.agency.example", "plain", "'quoted'", '"dq"', "[1, 2]", "{'a': 1}",
    "(1,)", "1+2j", "...", "b'x'", "a-b", "x.y", "{{ templated }}", "-", "[", "'a b'",
])
NAMES = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)


@st.composite
def fleets(draw: st.DrawFn) -> dict[str, Any]:
    groups = draw(st.lists(NAMES.map(lambda n: f"g_{n}"), min_size=1, max_size=5, unique=True))
    parent = {g: draw(st.sampled_from([None, *groups[:i]])) for i, g in enumerate(groups)}
    hosts = draw(st.lists(NAMES.map(lambda n: f"h-{n}.example"), min_size=1, max_size=8,
                          unique=True))
    keys = st.sampled_from(["v1", "v2", "v3", "ansible_user"])
    return {
        "groups": groups, "parent": parent,
        "members": {h: draw(st.lists(st.sampled_from([None, *groups]), min_size=1,
                                     max_size=3)) for h in hosts},
        "host_vars": {h: draw(st.dictionaries(keys, VALUES, max_size=3)) for h in hosts},
        "group_vars": {g: draw(st.dictionaries(keys, VALUES, max_size=3))
                       for g in [*groups, "all"]},
        "priority": {g: draw(st.sampled_from([None, 1, 2, 7])) for g in groups},
    }


def _ini(f: dict[str, Any]) -> str:
    lines = []
    for h, groups in f["members"].items():
        if None in groups:
            lines.append(h + "".join(f" {k}={v!r}" if " " in v else f" {k}={v}"
                                     for k, v in f["host_vars"][h].items()))
    for g in f["groups"]:
        lines.append(f"[{g}]")
        lines += [h for h, gs in f["members"].items() if g in gs]
        kids = [c for c, p in f["parent"].items() if p == g]
        if kids:
            lines += [f"[{g}:children]", *kids]
    for g, values in f["group_vars"].items():
        prio = f["priority"].get(g)
        if values or prio:
            lines.append(f"[{g}:vars]")
            lines += [f"{k}={v}" for k, v in values.items()]
            if prio:
                lines.append(f"ansible_group_priority={prio}")
    return "\n".join(lines) + "\n"


def _yaml(f: dict[str, Any]) -> str:
    import yaml  # noqa: PLC0415

    def group(g: str) -> dict[str, Any]:
        body: dict[str, Any] = {}
        hosts = {h: (f["host_vars"][h] or None) for h, gs in f["members"].items() if g in gs}
        if hosts:
            body["hosts"] = hosts
        gv = dict(f["group_vars"][g])
        if f["priority"].get(g):
            gv["ansible_group_priority"] = f["priority"][g]
        if gv:
            body["vars"] = gv
        kids = {c: group(c) for c, p in f["parent"].items() if p == g}
        if kids:
            body["children"] = kids
        return body

    top: dict[str, Any] = {"children": {g: group(g) for g, p in f["parent"].items()
                                        if p is None}}
    ungrouped = {h: (f["host_vars"][h] or None) for h, gs in f["members"].items()
                 if None in gs}
    if ungrouped:
        top["hosts"] = ungrouped
    if f["group_vars"]["all"]:
        top["vars"] = f["group_vars"]["all"]
    return yaml.safe_dump({"all": top}, sort_keys=False)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(fleet=fleets())
def test_generated_ini_matches_ansible(tmp_path: Path, fleet: dict[str, Any]) -> None:
    path = tmp_path / "gen.ini"
    path.write_text(_ini(fleet))
    assert _fast(path) == _ansible(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(fleet=fleets())
def test_generated_yaml_matches_ansible(tmp_path: Path, fleet: dict[str, Any]) -> None:
    path = tmp_path / "gen.yml"
    path.write_text(_yaml(fleet))
    assert _fast(path) == _ansible(path)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(VALUES, st.text(alphabet="0123456789abcxyj.-+_'\"[](){}:, eE#",
                                      max_size=12)))
def test_ini_values_are_typed_as_ansible_types_them(text: str) -> None:
    from ansible._internal._datatag._tags import Origin  # noqa: PLC0415
    from ansible.plugins.inventory.ini import InventoryModule  # noqa: PLC0415

    module = InventoryModule()
    module._origin = Origin(path="/gen.ini", line_num=1)
    theirs = inventory._plain(module._parse_value(text))
    assert staticini.ini_value(text) == theirs
    assert type(staticini.ini_value(text)) is type(theirs)


def test_loading_in_a_child_process_gives_the_same_inventory(tmp_path: Path) -> None:
    """`plan` reads the state while a forked child reads the inventory: what comes back
    through the pipe is the same inventory, and an error is the same one line."""
    path = tmp_path / "fleet.ini"
    path.write_text(ANSIBLE_DOC_INI + "\n[execution_nodes]\nnode1 ansible_host=10.0.0.9\n")
    here, there = inventory.load(path), inventory.load_in_background(path)()
    assert there == here and there.digests == here.digests and there.nodes == here.nodes
    assert [h.vars for h in there.hosts] == [h.vars for h in here.hosts]
    web = [h for h in there.hosts if "web" in h.groups]
    assert len(web) >= 2 and all(h.shared is web[0].shared for h in web if h.groups ==
                                 web[0].groups)  # shared group variables stay shared
    bad = tmp_path / "bad.ini"
    bad.write_text("[web]\nok.example\nbad!name\n")
    with pytest.raises(inventory.InventoryError) as theirs:
        inventory.load_in_background(bad)()
    with pytest.raises(inventory.InventoryError) as ours:
        inventory.load(bad)
    assert str(theirs.value) == str(ours.value) and "bad.ini:3" in str(ours.value)
    assert theirs.value.exit_code == ours.value.exit_code
    missing = inventory.load_in_background(tmp_path / "none.ini")
    with pytest.raises(inventory.InventoryError, match="does not exist"):
        missing()


def test_no_child_process_while_other_threads_run(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """fork() copies only the calling thread; with others running the load stays here."""
    import threading  # noqa: PLC0415

    path = tmp_path / "fleet.ini"
    path.write_text(ANSIBLE_DOC_INI)

    def no_fork() -> int:
        raise AssertionError("forked while another thread ran")

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        monkeypatch.setattr(inventory.os, "fork", no_fork)
        assert inventory.load_in_background(path)() == inventory.load(path)
    finally:
        stop.set()
        other.join()


def test_a_background_load_that_is_not_needed_leaves_no_process(tmp_path: Path) -> None:
    """A plan that fails before it needs the inventory closes the child: killed, reaped."""
    import os  # noqa: PLC0415

    path = tmp_path / "fleet.ini"
    path.write_text("[web]\n" + "".join(f"h{i}.example ansible_host=10.0.{i // 256}.{i % 256}\n"
                                         for i in range(20000)))
    loading = inventory.load_in_background(path)
    pid = loading.pid
    assert pid is not None
    loading.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped: no zombie, no orphan
    assert loading.pid is None and loading.pipe is None
    loading.close()  # twice is harmless
    assert len(inventory.load_in_background(path)().hosts) == 20000
