"""Factory provisioning at an untrusted contract manufacturer: batches, single-use
enrollment tokens, and the pure decision whether one enrollment may proceed."""
