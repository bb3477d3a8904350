"""Model code of the serving engine."""
