"""Prototypes of settled questions, kept runnable: the intra and temporal context designs the codec adopted
(splitinfer.codec); their figures are in docs/BENCHMARKS.md. bench/inter_coder.py reuses the temporal one's inputs."""
