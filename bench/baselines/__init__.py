"""Baseline codecs the study compares against: HEVC of channel-tiled tensors, JPEG of the input, raw."""
