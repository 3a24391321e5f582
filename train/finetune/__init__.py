"""Full fine-tune mode (``network.type = "full"``): the UNet (and optionally the text encoders) trained in full,
saved as single-file checkpoints, with the memory options that make it fit on one GPU, and the LoRA
extraction that follows a run (``output.extract_dim``). See docs/FINETUNE.md.

Modules, one job each: ``config`` (the ``[finetune]`` section and its cross-checks, pure pydantic),
``memory`` (the memory cost said up front), ``precision`` (bf16 weights: stochastic rounding, fp32 master
copies), ``fused`` (the optimizer step in backward), ``ema`` (the moving average of the weights), ``model``
(``FullModel``, what the loop trains and saves), ``extract`` (the LoRA extracted when a run ends).
"""
