"""Training: the face data, the degradation model (NumPy and its batched torch twin) and the training command."""
