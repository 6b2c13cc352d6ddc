"""``tuneyard``: the command line for people and CI/CD, over the REST API."""
