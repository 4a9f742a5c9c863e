"""Issue 10 part 2: a copy of the ``evidence/`` folder alone, outside the repository, verifies a real bundle
on a bare Python (``-I`` isolated, ``-S`` no site-packages, so no ``cryptography``), signature included, and
imports nothing outside the standard library on that path."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evidence.zipcanon import read_content, scan
from p2pwatch.bundle import write_bundle
from tests.bundle.test_bundle_writer import sample_inputs
from tests.conftest import require_component
from tests.evidence.test_evidence_tamper import repack

ROOT = Path(__file__).resolve().parents[2]
try:
    import libtorrent as lt
except ImportError:  # pragma: no cover - depends on the machine
    lt = None


@pytest.fixture(scope="module")
def examiner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a copy of evidence/ and a bundle written by p2pwatch, nothing else."""
    require_component("libtorrent", lt is not None, "pip install libtorrent")  # sample_inputs makes torrents
    data = tmp_path_factory.mktemp("bundle-data")
    write_bundle(data / "case.zip", **sample_inputs(data / "inputs", rows=200))
    where = tmp_path_factory.mktemp("examiner")
    assert not where.resolve().is_relative_to(ROOT)
    shutil.copytree(ROOT / "evidence", where / "evidence", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(data / "case.zip", where / "bundle.zip")
    return where


def _bare(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, check=False,
                          cwd=where, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"})


#: Runs the folder as ``python3 evidence ...`` does, then prints the top-level names of every loaded module.
_RUN_AND_LIST_MODULES = """
import runpy, sys
try:
    runpy.run_path("evidence", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("MODULES", " ".join(sorted({name.split(".")[0] for name in sys.modules})), file=sys.stderr)
sys.exit(code)
"""


def test_copy_of_the_evidence_folder_verifies_on_a_bare_python(examiner: Path) -> None:
    proc = _bare(examiner, "-I", "-S", "evidence", "verify", "bundle.zip")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    signature = next(x for x in lines if x.startswith("[ ok ] signature: "))
    assert "verified with public_key.pem by the pure-Python RFC 8032 verifier" in signature
    assert "cryptography" not in signature  # -S: it is not importable here
    assert any(x.strip().startswith("openssl pkeyutl -verify") for x in lines)  # the second check is still given
    assert lines[-1] == "RESULT: VERIFIED, every check holds"


def test_that_path_imports_nothing_outside_the_standard_library(examiner: Path) -> None:
    proc = _bare(examiner, "-I", "-S", "-c", _RUN_AND_LIST_MODULES, "verify", "bundle.zip")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[ ok ] signature: " in proc.stdout
    modules = next(x for x in proc.stderr.splitlines() if x.startswith("MODULES ")).split()[1:]
    assert {"evidence", "hashlib", "zlib", "json"} <= set(modules)  # the list holds what the verifier used
    outside = sorted(n for n in modules if n not in sys.stdlib_module_names and n not in ("evidence", "__main__"))
    assert outside == []


def test_module_form_without_isolation_also_works(examiner: Path) -> None:
    """``python3 -S -m evidence`` finds the package in the current directory (``-I`` would hide it: -P)."""
    proc = _bare(examiner, "-S", "-m", "evidence", "verify", "bundle.zip")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[ ok ] signature: " in proc.stdout


def test_bare_python_rejects_a_bundle_whose_signature_does_not_match(examiner: Path) -> None:
    bundle = (examiner / "bundle.zip").read_bytes()
    f = io.BytesIO(bundle)
    html = next(read_content(f, e, 1 << 24) for e in scan(f, len(bundle)) if e.name == "report.html")
    forged = repack(bundle, replace={"report.html": html + b"<!-- edited after signing -->"}, key=None,
                    keep_signature=True)
    (examiner / "forged.zip").write_bytes(forged)
    proc = _bare(examiner, "-I", "-S", "evidence", "verify", "forged.zip")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = [x for x in proc.stdout.splitlines() if x.startswith("[FAIL]")]
    assert len(failed) == 1 and failed[0].startswith("[FAIL] signature: the Ed25519 signature over manifest.json "
                                                     "does not verify"), failed
    assert proc.stdout.splitlines()[-1].startswith("RESULT: NOT VERIFIED")
