"""Files labctl writes from the model (render, Jinja2 only) and the one ansible_runner caller."""
