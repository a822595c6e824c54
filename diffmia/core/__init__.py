"""The foundation: configuration, registries, errors, atomic I/O, run folders, devices, threads, the environment.

Nothing here imports the rest of the project (targets, defenses, attacks, evaluate or the orchestration layer of
`diffmia`); everything else may import it.
"""
