"""The deployed lab as every experiment uses it: its topology, (re)deploying it, the verify
step, one measured run's session, and collecting host data at the end."""
