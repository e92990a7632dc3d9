"""Input and output: reading any image a user hands over, and writing without losing anyone's files."""
