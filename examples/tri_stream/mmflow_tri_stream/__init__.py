"""A third-party mmflow plugin in miniature with three streams at three rates.

It registers streams and tasks only; training (``mmflow train``), generation (``MMFlowPipeline``,
``mmflow generate``) and long-form sampling come from mmflow without a line of sampling code here.
"""
