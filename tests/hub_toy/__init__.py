"""A test-only remote-code model that uses hf_ext.core like a real component (see tests/test_hub.py)."""
