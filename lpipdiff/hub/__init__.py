"""The Hugging Face Hub: export a self-contained model folder, its model card, the Space, publishing."""
