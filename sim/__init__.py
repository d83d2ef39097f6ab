"""The simulated world and evaluation: room, robot, camera, expert, synthetic demonstrations, closed-loop
and offline evaluation, plots. Imports runtime/ (the robot's own code drives the simulated robot) and
never train/ or export/; runtime/ never imports this package (docs/architecture.md).
"""
