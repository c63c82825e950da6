"""Where the package's own files are: the Ansible collection it runs and the report templates.

Both travel inside the package (a wheel or pipx install has them under orchestrator/assets/);
in a checkout, orchestrator/assets/ links to the top-level playbooks/ and templates/.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# A collections root (it holds ansible_collections/): what ANSIBLE_COLLECTIONS_PATH names.
COLLECTIONS_ROOT = ASSETS
COLLECTION = "avmigrate.migration"
COLLECTION_DIR = COLLECTIONS_ROOT / "ansible_collections" / "avmigrate" / "migration"
PLAYBOOK_DIR = COLLECTION_DIR / "playbooks"
TEMPLATE_DIR = ASSETS / "templates"
# First on the Python path of every step: makes `invoke` unimportable (stepshim/invoke).
STEP_SHIM = ASSETS / "stepshim"
