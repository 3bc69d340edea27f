"""The torchreid trainer (being written)."""
