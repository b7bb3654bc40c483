"""Reports for people (workstation side): the Markdown results page with its charts, and the training and
evaluation charts. Needs matplotlib (pip install 'edgeface[train]')."""
