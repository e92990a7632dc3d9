"""The product's defaults and choice lists, importable without torch."""
