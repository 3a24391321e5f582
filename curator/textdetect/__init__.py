"""Text-heavy images through an optional ONNX text detector (``kiln check --text-model PATH``).

``config.py`` (``TextModelConfig``: the model file, its preprocessing preset, input side, pixel threshold),
``model.py`` (``TextDetector.load``: onnxruntime imported there only, input and output shapes checked;
``TextDetector.text_area(image)``: the share of the image its probability map calls text), ``check.py``
(``text_flags``: scores cached in the index per file and model, ``text-heavy`` findings).
"""
