"""What providers that build on this host share: processes, links, namespaces' shells, lab routers."""
