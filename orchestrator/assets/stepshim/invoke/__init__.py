"""Put first on the Python path of avmigrate's Ansible steps: `invoke` is not importable there.

ansible-core imports paramiko when it starts, whatever connection a step uses, and paramiko
imports invoke (which imports asyncio and unittest.mock) only to run ssh_config's `Match
exec` for the paramiko connection: about 0.45 s of CPU, a quarter of every Ansible start
(bench/README.md). Without it paramiko works on (ImportError is its own fallback).
"""

raise ImportError("avmigrate's steps run without invoke (paramiko's `Match exec` only)")
