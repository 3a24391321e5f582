"""kiln's headless LoRA trainer and run management."""
