"""Pure planning from the topology: the typed lab model, the lab dir's layout, the diff of two models."""
