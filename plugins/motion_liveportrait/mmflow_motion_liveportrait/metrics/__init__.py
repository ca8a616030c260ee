"""Video metrics and benchmark lists for ``mmflow evaluate``: FID/FVD, SyncNet's LSE-C/LSE-D, HDTF and CelebV-Dub.

Each metric module reads generated files by kind (see ``mmflow.evaluation.metric``); the factories are registered
by the plugin's ``mmflow_metrics`` hook, the list loaders by ``mmflow_benchmarks``.
"""
