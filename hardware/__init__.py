"""Machine facts (report) and resource sampling (sample) for scoring-lab.

Usable alone (python -m hardware ...) and by the Ansible monitor role; hardware.summary reduces
the sampler's files for the experiment analysis.
"""
