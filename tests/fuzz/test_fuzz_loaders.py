"""A mutation fuzzer for the inventory and policy loaders.

Starts from real files (the example inventory and policies, an INI inventory), mutates them
(bytes flipped, shell and YAML metacharacters inserted, lines deleted, duplicated or swapped,
pieces spliced between files) and loads each result. The only acceptable outcomes are a loaded
inventory or policy, or our one-line error (InventoryError / PolicyError): any other exception,
a multi-line message or a host name outside RFC 1123 getting through is a crash.

Runs for AVMIGRATE_FUZZ_SECONDS per loader (20 in `make test`; `make fuzz` runs 600), from
AVMIGRATE_FUZZ_SEED. A crash writes its input to test-artifacts/.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.core import names
from orchestrator.core.errors import InventoryError, PolicyError
from orchestrator.inputs import inventory, policy

ROOT = Path(__file__).resolve().parents[2]
SECONDS = float(os.environ.get("AVMIGRATE_FUZZ_SECONDS", "20"))
# A fixed seed in `make test` (the same inputs each time, as far as the time allows);
# `make fuzz` takes a new one each run to explore.
SEED = int(os.environ.get("AVMIGRATE_FUZZ_SEED", "20261127"))
INI = ("[workstations]\nws-01 ansible_host=192.0.2.11 avmigrate_note=one\n"
       "ws-02 ansible_host=192.0.2.12\n[servers]\nsrv-01 ansible_host=192.0.2.21\n"
       "[servers:vars]\nansible_user=admin\n[all:children]\nworkstations\nservers\n")
NASTY = [";", "$(id)", "`id`", "{{ 7*7 }}", "{%", "\x00", "\n", "'", '"', ":", "- ", "[", "]",
         "{", "}", "&", "|", ">", "*", "!unsafe ", "!!python/object:os.system ", "%", "\t",
         "\u202e", "é", "..", "-o StrictHostKeyChecking=no", " ", "#", "=", "@", "\\"]


def mutate(rng: random.Random, text: str, corpus: list[str]) -> str:
    lines = text.splitlines(keepends=True) or [""]
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        i = rng.randrange(len(lines))
        if op == 0 and len(lines) > 1:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3:
            line = lines[i]
            k = rng.randint(0, len(line))
            lines[i] = line[:k] + rng.choice(NASTY) + line[k:]
        elif op == 4 and lines[i]:
            raw = bytearray(lines[i].encode())
            raw[rng.randrange(len(raw))] = rng.randrange(256)
            lines[i] = raw.decode("utf-8", errors="replace")
        else:
            other = rng.choice(corpus).splitlines(keepends=True) or [""]
            lines[i:i] = other[rng.randrange(len(other)):][: rng.randint(1, 3)]
    return "".join(lines)


def fuzz(  # noqa: PLR0913, PLR0917 - a campaign: inputs, loader, the error it may raise, check
        name: str, corpus: list[str], suffixes: list[str],
         load: Callable[[Path], object], expected: type[Exception],
         check: Callable[[object], None]) -> None:
    rng = random.Random(SEED)
    runs = accepted = 0
    errors: set[str] = set()
    deadline = time.monotonic() + SECONDS
    with tempfile.TemporaryDirectory() as tmp:
        while time.monotonic() < deadline:
            text = mutate(rng, rng.choice(corpus), corpus)
            path = Path(tmp) / f"input{rng.choice(suffixes)}"
            path.write_text(text, encoding="utf-8", errors="surrogateescape")
            runs += 1
            try:
                result = load(path)
            except expected as exc:
                message = str(exc)
                assert "\n" not in message, (message, text)
                assert message.startswith((str(path), "inventory", "policy")), (message, text)
                errors.add(message.split(":", 2)[-1][:60])
                continue
            except Exception as exc:  # noqa: BLE001 - a crash: keep the input that made it
                crash = ROOT / "test-artifacts" / f"crash-{name}-{SEED}-{runs}{path.suffix}"
                crash.parent.mkdir(exist_ok=True)
                crash.write_text(text, encoding="utf-8", errors="surrogateescape")
                pytest.fail(f"{name} loader crashed on {crash}: {exc!r}")
            accepted += 1
            check(result)
    print(f"\nfuzz {name}: seed {SEED}, {runs} inputs in {SECONDS:.0f}s, {accepted} accepted, "
          f"{len(errors)} distinct errors")
    assert runs > 10


def check_inventory(inv: object) -> None:
    assert isinstance(inv, inventory.Inventory)
    for host in inv.hosts:
        assert names.alias_problem(host.name) is None, host.name


def test_fuzz_the_inventory_loader() -> None:
    corpus = [INI, (ROOT / "inventory" / "example.yml").read_text()]
    fuzz("inventory", corpus, [".ini", ".yml", ""], inventory.load, InventoryError,
         check_inventory)


def test_fuzz_the_policy_loader() -> None:
    corpus = [(ROOT / "inventory" / n).read_text()
              for n in ("policy.example.yml", "policy.demo.yml")]
    fuzz("policy", corpus, [".yml"], policy.load, PolicyError,
         lambda p: isinstance(p, policy.Policy) or pytest.fail("not a policy"))
