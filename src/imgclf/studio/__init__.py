"""imgclf studio: a local browser app over the same library as the command line.

    imgclf studio my-workspace            # opens http://127.0.0.1:PORT/ in the browser

A workspace is a folder of projects; a project is a data folder of class sub-folders and the runs trained on it
(`workspace.py`). The page talks to a JSON API (`/openapi.json`) that only ever writes inside the workspace.
"""
