"""Reading a lab: inspect, verify, bgp, trace, capture, graph, view."""
