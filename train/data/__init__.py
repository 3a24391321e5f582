"""The trainer's data pipeline: curator dataset -> items -> per-epoch bucket batches -> tensors.

Modules: ``captions`` (kohya caption processing), ``tokens`` (75-token chunking and text encoding),
``images`` (decode, resize, crop, flip), ``dataset`` (items and epoch plans), ``cache`` (latent and
text-encoder caches), ``loader`` (batch tensors, a torch Dataset: the one module that imports torch at
import time). Elsewhere heavy libraries are imported inside functions.
"""
