"""labctl: a containerlab-style provisioner for Kubernetes + Calico networking labs."""

__version__ = "0.1.0"
