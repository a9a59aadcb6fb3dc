"""The topology file: its schema, loading with FILE:LINE, validation rules (the lowest layer but errors)."""
