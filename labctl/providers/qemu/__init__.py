"""Local VMs for the qemu provider: the base image (image.py), the machines and their host side
(machine.py) and the lab's package proxy (proxy.py)."""
