"""`kiln lora`: inspect, extract, resize, merge and test LoRA files (headless; see docs/LORA_TOOLS.md).

One module per job: ``files`` (reading inputs, guarding outputs), ``adapters`` (a LoRA file's modules in any of
the kohya / LyCORIS / PEFT layouts), ``blocks`` (LoRA Block Weight block ids and presets), ``keymap`` (where a
module's weight sits in a base model), ``base`` (a base model's tensors, read lazily), ``delta`` (the weight
change a module makes), ``svd`` (low-rank factorisation), ``info``, ``extract``, ``resize``, ``merge``, ``grid``,
and ``cli`` (the argparse front end). Importing the package loads no torch.
"""
