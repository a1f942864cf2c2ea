"""The fault suite: every command through its bad inputs, kills, write failures and determinism (docs/reliability.md)."""
