"""The SimPy world: the simulation, its entities and the event log."""
