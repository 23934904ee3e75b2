"""The tracker engines by name, importable without loading any runtime (for settings and help)."""

ENGINES = ("auto", "onnx-int8", "onnx", "torch", "cuda", "tensorrt", "tensorrt-int8")
CPU_DEFAULT = "onnx-int8"
ENGINE_HELP = "Tracker engine: " + " | ".join(ENGINES) + " (auto: TensorRT, else CUDA, else onnx-int8)."
