"""Tests of the stdlib-only evidence/ package (bundle format, verifier, tamper cases)."""
