"""The choices and defaults of ONNX export, importable without torch (the command line shows them)."""

#: torch.onnx exporters: torch.export based (the default) and the legacy tracer
EXPORTERS = ("dynamo", "torchscript")
#: parity check tolerances: |onnx - torch| <= ATOL + RTOL * |torch|
ATOL, RTOL = 1e-4, 1e-3
