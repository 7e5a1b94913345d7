"""`ktune`, the command line of the ktune client: `ktune submit job.json --wait`, `ktune status ID` ...

Installed as a console script (pyproject's [project.scripts]); `python -m service.cli` runs the same.
"""
