"""kiln's Textual client: the curator and runs views. Holds no domain logic."""
