"""Evaluation: metrics, age bands, seeded test pairs, reports and the evaluate command."""
