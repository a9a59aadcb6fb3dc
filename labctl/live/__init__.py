"""Reaching nodes: SSH access, node shells, fan-out, SSH masters, parsers of bird and iproute output."""
