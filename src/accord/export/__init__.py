"""The consensus model out of a workspace: framework files without optimizer state, ONNX, OpenVINO IR."""
