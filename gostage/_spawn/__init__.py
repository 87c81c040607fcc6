"""Child workflows in supervised processes.

``_protocol`` (the wire format) and ``_child`` (the child's entry point) are all a
child imports; ``_supervisor`` and ``_spawner`` (psutil, cloudpickle) live only in
the parent and are imported on the first spawn.
"""
