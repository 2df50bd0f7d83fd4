"""RaceComp: per-race fairness of image models (upscaling, verification, quantization)."""
