"""The netns provider: each node a network namespace of this host with its own sshd and BIRD."""
