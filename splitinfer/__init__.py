"""splitinfer: split DNN inference for live video.

The edge runs the head of a detector, codes the tensors at the cut with a lightweight codec
(clip, quantize, truncated-unary binarization, context-adaptive binary arithmetic coding) and
streams them over bidirectional gRPC; the cloud decodes them, runs the tail and streams results.
"""

__version__ = "0.1.0"
