"""Prefect flows over the stage libraries, and the `yume-data` command. The only package that imports Prefect."""
