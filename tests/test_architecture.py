"""Architecture rules: edges depend only on the core; the core imports no framework."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    """import-linter checks the contracts declared in pyproject.toml."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_top_level_layout() -> None:
    """The repository's top level holds the agreed packages and files."""
    for name in ("imaging_hub", "dicom_scp", "viewer_api", "workers", "tests", "bench", "docs"):
        assert (ROOT / name).is_dir(), name
    for name in ("pyproject.toml", "README.md", "docker-compose.yml", "Dockerfile", ".ci/run"):
        assert (ROOT / name).is_file(), name
