"""``p2pwatch keys generate`` / ``keys show`` / ``verify`` and the signing-key file rules."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from p2pwatch.bundle import keys, write_bundle
from p2pwatch.cli import main
from p2pwatch.errors import ConfigError, KeyFileError
from tests.bundle.test_bundle_writer import sample_inputs


def test_keys_generate_writes_a_private_key_and_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["--home", str(tmp_path), "keys", "generate"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "keys" / "centre_ed25519.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = keys.load_key(path)
    assert f"fingerprint (SHA-256 of the raw Ed25519 public key): {keys.fingerprint(key)}" in result.output
    before = path.read_bytes()
    again = runner.invoke(main, ["--home", str(tmp_path), "keys", "generate"])
    assert again.exit_code == 2
    assert again.output.count("\n") == 1 and "--force" in again.output and "Traceback" not in again.output
    assert path.read_bytes() == before
    forced = runner.invoke(main, ["--home", str(tmp_path), "keys", "generate", "--force", "--json"])
    assert forced.exit_code == 0
    doc = json.loads(forced.output)
    assert doc["path"] == str(path) and doc["fingerprint"] == keys.fingerprint(keys.load_key(path))
    assert path.read_bytes() != before
    shown = runner.invoke(main, ["--home", str(tmp_path), "keys", "show", "--json"])
    assert json.loads(shown.output)["fingerprint"] == doc["fingerprint"]
    assert not list(path.parent.glob("*.tmp"))


def test_load_key_refuses_loose_modes_and_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    keys.save_key(path, keys.generate_key())
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        keys.load_key(path)
    os.chmod(path, 0o600)
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError):
        keys.load_key(path)
    with pytest.raises(ConfigError, match="keys generate"):
        keys.load_key(tmp_path / "absent.pem")
    with pytest.raises(ConfigError):
        keys.save_key(path, keys.generate_key())


def test_keys_show_without_a_key_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--home", str(tmp_path), "keys", "show"])
    assert result.exit_code == 2 and "p2pwatch keys generate" in result.output and "Traceback" not in result.output


def test_verify_command_exit_codes(tmp_path: Path) -> None:
    bundle = tmp_path / "case.zip"
    inputs = sample_inputs(tmp_path / "data", rows=80)
    write_bundle(bundle, **inputs)
    runner = CliRunner()
    ok = runner.invoke(main, ["verify", str(bundle)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.rstrip().endswith("RESULT: VERIFIED, every check holds")
    fp = keys.fingerprint(inputs["signing_key"])
    assert runner.invoke(main, ["verify", str(bundle), "--expect-fingerprint", fp]).exit_code == 0
    assert runner.invoke(main, ["verify", str(bundle), "--expect-fingerprint", "00" * 32]).exit_code == 1
    as_json = runner.invoke(main, ["verify", str(bundle), "--json"])
    assert json.loads(as_json.output)["verified"] is True
    damaged = tmp_path / "damaged.zip"
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x40
    damaged.write_bytes(bytes(data))
    bad = runner.invoke(main, ["verify", str(damaged)])
    assert bad.exit_code == 1 and "RESULT: NOT VERIFIED" in bad.output
    missing = runner.invoke(main, ["verify", str(tmp_path / "nope.zip")])
    assert missing.exit_code == 2
