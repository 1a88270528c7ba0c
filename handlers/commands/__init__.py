"""The command families: one module each, every command declared once with its help and
right (``handlers.plumbing.registry``), each handing its work to a flow of the engine."""
