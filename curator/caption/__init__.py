"""Natural-language captions from a local transformers model: BLIP, Florence-2 and chat VLMs (LLaVA-style).

Modules: ``config`` (``CaptionConfig``), ``model`` (finding the model offline, loading it, batched generation),
``text`` (cleaning a generated sentence and merging it into a caption file), ``runner`` (a dataset run whose
writes all go through the caption journal). torch and transformers are imported only when a model is loaded.
"""
